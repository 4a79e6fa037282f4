#include "internal.h"
void fsim_iocp_put(void *iocp) { (void)iocp; }
