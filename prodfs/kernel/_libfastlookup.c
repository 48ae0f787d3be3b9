/*
 * Lookups answered in C: a name inside a version's tree never enters Python
 * once the daemon has listed its directory.
 *
 * A version's tree never changes (a new version gets new inodes, see
 * `prodfs/kernel/_zeroopen.py`), so the answer to LOOKUP(parent, name) below a
 * version's top directory is fixed for the life of the mount. After the
 * daemon answers the first lookup in such a directory, it gives this table
 * every entry of that directory (`prodfs._fastpath.FastLookups`); the wrapped
 * `lookup` of `_libzeroopen.c` then answers the siblings from here. Root
 * names (which move with the context), control files, conflicts and misses
 * always go to pyfuse3.
 *
 * Direct-mapped on (parent, name): a collision replaces the older entry,
 * which then takes the slow path once. The daemon fills the table from its
 * thread; lookups are answered there (the wrapped `lookup`) and, with
 * passthrough, on the thread that reads the device (`_libpassthrough.c`,
 * through `prodfs_fastlookup_find`): a lock keeps them apart, and nothing
 * else is taken under it. Depends on no other file of the library (see
 * `_libprodfs.h`).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include "_libprodfs.h"

#define LOOKUP_BITS 16
#define NAME_MAX_LEN 255

struct cached_entry {
    uint64_t parent;
    char *name; /* NUL-terminated copy; NULL when the slot is empty */
    struct fuse_entry_param e;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached_entry *table;
static int enabled;

/* Read from Python: lookups answered here. */
uint64_t prodfs_fastlookup_answered;

static uint32_t slot_of(uint64_t parent, const char *name, size_t len)
{
    uint64_t h = 1469598103934665603u ^ (parent * UINT64_C(0x9E3779B97F4A7C15));

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 1099511628211u;
    return (uint32_t)(h >> (64 - LOOKUP_BITS));
}

/* The entry for (parent, name) into `*e`: 1, counted as answered; 0 if the daemon must answer. */
int prodfs_fastlookup_find(uint64_t parent, const char *name, size_t len, struct fuse_entry_param *e)
{
    struct cached_entry *c;
    int found = 0;

    pthread_mutex_lock(&lock);
    if (enabled) {
        c = &table[slot_of(parent, name, len)];
        found = c->name != NULL && c->parent == parent && strlen(c->name) == len && memcmp(c->name, name, len) == 0;
        if (found) {
            *e = c->e;
            prodfs_fastlookup_answered++;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

/* Called by the wrapped `lookup`: 1 if answered here, 0 for pyfuse3. */
int prodfs_fastlookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;

    if (!prodfs_fastlookup_find(parent, name, strlen(name), &e))
        return 0;
    fuse_reply_entry(req, &e);
    return 1;
}

int prodfs_fastlookup_start(void)
{
    pthread_mutex_lock(&lock);
    if (table == NULL)
        table = calloc((size_t)1 << LOOKUP_BITS, sizeof(*table));
    enabled = table != NULL;
    pthread_mutex_unlock(&lock);
    return enabled ? 0 : -1;
}

/* One directory entry into its slot, with `lock` held; `copy` (of `len` bytes) is the table's from now on. */
static void store(uint64_t parent, char *copy, size_t len, const struct prodfs_lookup_rec *r)
{
    struct cached_entry *c = &table[slot_of(parent, copy, len)];

    free(c->name);
    memset(c, 0, sizeof(*c));
    c->parent = parent;
    c->name = copy;
    c->e.ino = r->ino;
    c->e.entry_timeout = r->entry_timeout;
    c->e.attr_timeout = r->attr_timeout;
    c->e.attr.st_ino = r->ino;
    c->e.attr.st_mode = r->mode;
    c->e.attr.st_nlink = S_ISDIR(r->mode) ? 2 : 1;
    c->e.attr.st_uid = r->uid;
    c->e.attr.st_gid = r->gid;
    c->e.attr.st_size = (off_t)r->size;
    c->e.attr.st_blocks = (blkcnt_t)((r->size + 511) / 512);
    c->e.attr.st_blksize = r->blksize;
    c->e.attr.st_atim.tv_sec = c->e.attr.st_mtim.tv_sec = c->e.attr.st_ctim.tv_sec = r->t_ns / 1000000000;
    c->e.attr.st_atim.tv_nsec = c->e.attr.st_mtim.tv_nsec = c->e.attr.st_ctim.tv_nsec = r->t_ns % 1000000000;
}

void prodfs_fastlookup_put_many(uint64_t parent, const struct prodfs_lookup_rec *recs, uint32_t n, const char *names)
{
    char **copies = calloc(n ? n : 1, sizeof(*copies));

    if (copies == NULL)
        return; /* those lookups come to the daemon, as before */
    /* the copies before the lock: a lookup on the reader thread waits only for the stores */
    for (uint32_t i = 0; i < n; i++) {
        const struct prodfs_lookup_rec *r = &recs[i];
        const char *name = names + r->name_off;

        if (r->name_len == 0 || r->name_len > NAME_MAX_LEN || memchr(name, 0, r->name_len) != NULL)
            continue;
        copies[i] = strndup(name, r->name_len);
    }
    pthread_mutex_lock(&lock);
    if (enabled) {
        for (uint32_t i = 0; i < n; i++) {
            if (copies[i] != NULL) {
                store(parent, copies[i], recs[i].name_len, &recs[i]);
                copies[i] = NULL;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    for (uint32_t i = 0; i < n; i++)
        free(copies[i]);
    free(copies);
}

void prodfs_fastlookup_stop(void)
{
    pthread_mutex_lock(&lock);
    enabled = 0;
    if (table != NULL) {
        for (size_t i = 0; i < (size_t)1 << LOOKUP_BITS; i++)
            free(table[i].name);
        free(table);
        table = NULL;
    }
    pthread_mutex_unlock(&lock);
}
