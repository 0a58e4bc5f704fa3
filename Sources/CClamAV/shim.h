#ifndef AIRLOCK_CCLAMAV_SHIM_H
#define AIRLOCK_CCLAMAV_SHIM_H

#include <clamav.h>

/// `CL_DB_STDOPT` is a macro built from other macros, which Swift cannot import.
static const unsigned int CCLAMAV_DB_STDOPT = CL_DB_STDOPT;

#endif
