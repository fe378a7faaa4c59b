/* Levelled, target-filtered logging to stderr (or a file that stands in
 * for it): "[LEVEL target] message". */
#ifndef KIRO_LOG_H
#define KIRO_LOG_H

#include <stddef.h>

enum klog_level { KLOG_OFF = 0, KLOG_ERROR, KLOG_WARN, KLOG_INFO, KLOG_DEBUG, KLOG_TRACE };

/* Parse a KIRO_LOG filter ("debug", "kiro.pool=trace,warn"). Returns 0, or -1
 * (and leaves the current filter alone) when the text is malformed. */
int klog_set_filter(const char *spec);
/* The same check, nothing set. */
int klog_check_filter(const char *spec);
int klog_enabled(enum klog_level lvl, const char *target);
void klog_write(enum klog_level lvl, const char *target, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int klog_level_parse(const char *name);
/* From now on the log (and stderr) goes to `path`, appended, created 0600;
 * past max_bytes (0: no bound) it is rotated to `path`.1. Returns 0, or -1
 * with a message. */
int klog_set_file(const char *path, size_t max_bytes, char *err, size_t errlen);
/* Opens the log file again (after logrotate moved it; on SIGHUP). */
int klog_reopen(void);
/* A host's logger takes every line that passes the filter, instead of
 * stderr or the file: fn(ud, level, target, message). NULL: back to them.
 * A line logged while the sink runs goes to stderr (no recursion). */
typedef void (*klog_sink_fn)(void *ud, enum klog_level lvl, const char *target, const char *msg);
void klog_set_sink(klog_sink_fn fn, void *ud);
/* "error", "warn", "info", "debug" or "trace". */
const char *klog_level_name(enum klog_level lvl);

#define klog(lvl, target, ...)                        \
    do {                                              \
        if (klog_enabled((lvl), (target)))            \
            klog_write((lvl), (target), __VA_ARGS__); \
    } while (0)

#endif
