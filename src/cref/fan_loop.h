/* The C reference client for fanotify: the plainest correct loop (poll, read many events, one
 * FAN_ALLOW response per event, close its fd), the yardstick of `fastport bench --source
 * fanotify`. Linux only. */
#ifndef FP_CREF_FAN_LOOP_H
#define FP_CREF_FAN_LOOP_H
#include <stdint.h>

/* Serves group_fd until stop_fd (an eventfd) is readable; *events counts the permission events
 * answered. Returns 0, or the errno of a failed poll/read. */
int fp_fan_cref_run(int group_fd, int stop_fd, uint64_t *events);

#endif
