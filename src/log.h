/* Levelled, target-filtered logging to stderr (or a file that stands in
 * for it): "[LEVEL target] message". */
#ifndef KIRO_LOG_H
#define KIRO_LOG_H

#include <stddef.h>

enum log_level { LOG_OFF = 0, LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

/* Parse a KIRO_LOG filter ("debug", "kiro.pool=trace,warn"). Returns 0, or -1
 * (and leaves the current filter alone) when the text is malformed. */
int log_set_filter(const char *spec);
int log_enabled(enum log_level lvl, const char *target);
void log_write(enum log_level lvl, const char *target, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int log_level_parse(const char *name);
/* From now on the log (and stderr) goes to `path`, appended, created 0600;
 * past max_bytes (0: no bound) it is rotated to `path`.1. Returns 0, or -1
 * with a message. */
int log_set_file(const char *path, size_t max_bytes, char *err, size_t errlen);
/* Opens the log file again (after logrotate moved it; on SIGHUP). */
int log_reopen(void);

#define klog(lvl, target, ...) \
    do { if (log_enabled((lvl), (target))) log_write((lvl), (target), __VA_ARGS__); } while (0)

#endif
