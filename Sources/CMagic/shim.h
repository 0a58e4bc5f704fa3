#ifndef AIRLOCK_CMAGIC_SHIM_H
#define AIRLOCK_CMAGIC_SHIM_H

#include <magic.h>

#endif
