/* User-side handle table, of typed objects (ports; the Win32 face's completion ports, events and
 * threads). A SIM_HANDLE is (generation << 32 | (slot + 1) << 2), so a closed or forged handle is
 * recognised (ERROR_INVALID_HANDLE) instead of being dereferenced; its two low bits are 0, as a
 * Windows handle's are (an OVERLAPPED's hEvent uses bit 0 as a flag). Each call holds a
 * reference on the handle's object for its duration, so a close on another thread never frees
 * memory under a running call.
 *
 * fork(): the table's lock is taken around every fork (pthread_atfork), so a child that closes a
 * handle it inherited does not find the lock held by a thread that does not exist there; and the
 * fork generation (fsim_fork_generation) tells a connection made before the fork from one made in
 * this process: an inherited connection is the parent's (see sock_user.c). */
#include <stdlib.h>
#include "internal.h"

typedef struct slot {
    uint32_t gen;
    fsim_hobj *obj;
} slot;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static slot *table;
static uint32_t table_cap, free_hint;
static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { pthread_mutex_lock(&table_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&table_lock); }
static void after_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
    pthread_mutex_unlock(&table_lock);
}
static void register_atfork(void)
{
    (void)pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

uint32_t fsim_fork_generation(void)
{
    pthread_once(&atfork_once, register_atfork);
    return atomic_load(&fork_gen);
}

SIM_HANDLE fsim_handle_new(const fsim_handle_ops *ops, void *impl)
{
    pthread_once(&atfork_once, register_atfork);
    fsim_hobj *o = calloc(1, sizeof *o);
    if (!o)
        return 0;
    atomic_init(&o->refs, 1);
    o->ops = ops;
    o->impl = impl;
    atomic_init(&o->iocp, NULL);
    pthread_mutex_lock(&table_lock);
    uint32_t i;
    for (i = 0; i < table_cap; i++) {
        uint32_t k = (free_hint + i) % table_cap;
        if (!table[k].obj) {
            i = k;
            goto found;
        }
    }
    {
        uint32_t cap = table_cap ? table_cap * 2 : 64;
        slot *t = realloc(table, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&table_lock);
            free(o);
            return 0;
        }
        for (uint32_t k = table_cap; k < cap; k++)
            t[k] = (slot){1, NULL};
        i = table_cap;
        table = t;
        table_cap = cap;
    }
found:
    table[i].obj = o;
    free_hint = i + 1;
    SIM_HANDLE h = ((uint64_t)table[i].gen << 32) | ((uint64_t)(i + 1) << 2);
    pthread_mutex_unlock(&table_lock);
    return h;
}

static slot *lookup(SIM_HANDLE h)
{
    uint32_t low = (uint32_t)(h & 0xFFFFFFFFu), i = low >> 2;
    if ((low & 3) || i == 0 || i > table_cap)
        return NULL;
    slot *s = &table[i - 1];
    if (!s->obj || s->gen != (uint32_t)(h >> 32))
        return NULL;
    return s;
}

fsim_hobj *fsim_handle_ref(SIM_HANDLE h)
{
    pthread_mutex_lock(&table_lock);
    slot *s = lookup(h);
    fsim_hobj *o = s ? s->obj : NULL;
    if (o)
        atomic_fetch_add(&o->refs, 1);
    pthread_mutex_unlock(&table_lock);
    return o;
}

fsim_hobj *fsim_handle_ref_type(SIM_HANDLE h, enum fsim_htype type)
{
    fsim_hobj *o = fsim_handle_ref(h);
    if (o && o->ops->type != type) {
        fsim_handle_unref(o);
        return NULL;
    }
    return o;
}

void fsim_handle_unref(fsim_hobj *o)
{
    if (atomic_fetch_sub(&o->refs, 1) != 1)
        return;
    o->ops->release(o);
    void *iocp = atomic_load(&o->iocp);
    if (iocp)
        fsim_iocp_put(iocp);
    free(o);
}

int fsim_handle_close(SIM_HANDLE h)
{
    pthread_mutex_lock(&table_lock);
    slot *s = lookup(h);
    fsim_hobj *o = s ? s->obj : NULL;
    if (s) {
        s->obj = NULL;
        s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
    }
    pthread_mutex_unlock(&table_lock);
    if (!o)
        return -1;
    o->ops->close(o);
    fsim_handle_unref(o);
    return 0;
}
