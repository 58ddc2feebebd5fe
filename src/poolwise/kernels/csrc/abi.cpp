// The version of the C ABI this library was built with; see poolwise_kernels.h.

#include "poolwise_kernels.h"

extern "C" int32_t pw_abi_version(void) { return PW_ABI_VERSION; }
