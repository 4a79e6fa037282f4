/* See fan_loop.h. */
#ifdef __linux__
#include <errno.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include "fan_loop.h"

int fp_fan_cref_run(int group_fd, int stop_fd, uint64_t *events)
{
    char buf[256 * sizeof(struct fanotify_event_metadata)]
        __attribute__((aligned(__alignof__(struct fanotify_event_metadata))));
    struct pollfd p[2] = {{group_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        ssize_t len = read(group_fd, buf, sizeof buf);
        if (len < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return errno;
            if (poll(p, 2, -1) < 0 && errno != EINTR)
                return errno;
            if (p[1].revents & POLLIN)
                return 0;
            continue;
        }
        const struct fanotify_event_metadata *m = (const void *)buf;
        for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
            if (m->fd < 0)
                continue;
            struct fanotify_response r = {.fd = m->fd, .response = FAN_ALLOW};
            if (write(group_fd, &r, sizeof r) == (ssize_t)sizeof r)
                ++*events;
            close(m->fd);
        }
    }
}
#endif
