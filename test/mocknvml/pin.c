// Keeps the mock library loaded for the life of the process: a Go runtime
// cannot be unloaded, and go-nvml dlcloses the library on its last
// nvmlShutdown (a later nvmlInit dlopens it again and finds it still there).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

__attribute__((constructor)) static void mocknvml_pin(void) {
	Dl_info info;
	if (dladdr((void *)mocknvml_pin, &info) != 0 && info.dli_fname != NULL) {
		dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
	}
}
