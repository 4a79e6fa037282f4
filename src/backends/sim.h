/* Backend over the emulated Filter Manager's user side (SimFilterGetMessages / ...Replies). */
#ifndef FP_BACKEND_SIM_H
#define FP_BACKEND_SIM_H
#include "backend.h"
#include "../fltsim/fltsim.h"

/* The backend borrows the handle: the caller keeps it open while the backend lives. */
fp_backend *fp_sim_backend_new(SIM_HANDLE port);

#endif
