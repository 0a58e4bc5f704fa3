#ifndef AIRLOCK_CCLAMAV_SHIM_H
#define AIRLOCK_CCLAMAV_SHIM_H

#include <clamav.h>
#include <sys/stat.h>

/// `CL_DB_STDOPT` is a macro built from other macros, which Swift cannot import.
static const unsigned int CCLAMAV_DB_STDOPT = CL_DB_STDOPT;

/// The size of the file behind a descriptor, or -1. Kept in C so Swift never reads `struct stat` members, whose
/// module of origin depends on build order under MemberImportVisibility.
static inline long long ccl_descriptor_size(int descriptor) {
    struct stat status;
    if (descriptor < 0 || fstat(descriptor, &status) != 0) {
        return -1;
    }
    return (long long)status.st_size;
}

#endif
