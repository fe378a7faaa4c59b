#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

#define KLOG_MAX_RULES 16
#define KLOG_TARGET_MAX 64

struct log_rule {
    char target[KLOG_TARGET_MAX]; /* empty: the default rule */
    int level;
};

static struct log_rule rules[KLOG_MAX_RULES];
static int nrules;
static int default_level = KLOG_WARN;

static const char *const level_names[] = { "off", "error", "warn", "info", "debug", "trace" };

int klog_level_parse(const char *name)
{
    for (int i = 0; i <= KLOG_TRACE; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return KLOG_WARN;
    return -1;
}

static int parse_filter(const char *spec, int apply);

int klog_set_filter(const char *spec)
{
    return parse_filter(spec, 1);
}

int klog_check_filter(const char *spec)
{
    return parse_filter(spec, 0);
}

static int parse_filter(const char *spec, int apply)
{
    struct log_rule nr[KLOG_MAX_RULES];
    int n = 0, def = KLOG_WARN;
    char tmp[512];

    if (!spec)
        spec = "";
    if (strlen(spec) >= sizeof tmp)
        return -1;
    strcpy(tmp, spec);
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        char *eq = strchr(tok, '=');
        if (!eq) {
            int lvl = klog_level_parse(tok);
            if (lvl < 0)
                return -1;
            def = lvl;
            continue;
        }
        *eq = '\0';
        int lvl = klog_level_parse(eq + 1);
        if (lvl < 0 || n == KLOG_MAX_RULES || strlen(tok) >= KLOG_TARGET_MAX || !*tok)
            return -1;
        strcpy(nr[n].target, tok);
        nr[n].level = lvl;
        n++;
    }
    if (!apply)
        return 0;
    memcpy(rules, nr, sizeof nr[0] * (size_t)n);
    nrules = n;
    default_level = def;
    return 0;
}

/* The longest rule whose target is a dotted prefix of `target` wins. */
int klog_enabled(enum klog_level lvl, const char *target)
{
    int level = default_level;
    size_t best = 0;
    for (int i = 0; i < nrules; i++) {
        size_t tl = strlen(rules[i].target);
        if (tl > best && strncmp(target, rules[i].target, tl) == 0 &&
            (target[tl] == '\0' || target[tl] == '.')) {
            best = tl;
            level = rules[i].level;
        }
    }
    return lvl != KLOG_OFF && (int)lvl <= level;
}

/* The log file, when there is one: it is also stderr (fd 2), so anything
 * else written there (a Lua error, a sanitizer report) lands in it too. */
static char *log_path;
static size_t log_max, log_size;

static int open_log(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    struct stat st;
    if (fd < 0) {
        snprintf(err, errlen, "cannot write the log %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cannot write the log %s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (dup2(fd, 2) < 0) {
        snprintf(err, errlen, "cannot use the log %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    log_size = (size_t)st.st_size;
    return 0;
}

int klog_set_file(const char *path, size_t max_bytes, char *err, size_t errlen)
{
    if (open_log(path, err, errlen) != 0)
        return -1;
    free(log_path);
    log_path = kstrdup(path);
    log_max = max_bytes;
    return 0;
}

int klog_reopen(void)
{
    char err[512];
    if (!log_path)
        return 0;
    fflush(stderr);
    if (open_log(log_path, err, sizeof err) != 0) {
        klog_write(KLOG_ERROR, "kiro.log", "%s; still writing to the file open before", err);
        return -1;
    }
    return 0;
}

/* Past log_max: the file becomes <path>.1 (one older file kept) and a new
 * one is started. */
static void rotate(void)
{
    char old[4096];
    snprintf(old, sizeof old, "%s.1", log_path);
    if (rename(log_path, old) == 0)
        klog_reopen();
    else
        log_size = 0; /* cannot rotate: do not try at every line */
}

static klog_sink_fn sink;
static void *sink_ud;
static int in_sink;

void klog_set_sink(klog_sink_fn fn, void *ud)
{
    sink = fn;
    sink_ud = ud;
}

const char *klog_level_name(enum klog_level lvl)
{
    static const char *const names[] = { "off", "error", "warn", "info", "debug", "trace" };
    return names[lvl];
}

void klog_write(enum klog_level lvl, const char *target, const char *fmt, ...)
{
    static const char *const tags[] = { "OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE" };
    char line[4096];
    va_list ap;
    int n = snprintf(line, sizeof line, "[%s %s] ", tags[lvl], target);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (sink && !in_sink) {
        in_sink = 1;
        sink(sink_ud, lvl, target, line + n);
        in_sink = 0;
        return;
    }
    /* One write per line, so lines from several processes do not interleave. */
    size_t len = strlen(line);
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
    fflush(stderr);
    if (log_path && log_max && (log_size += len) > log_max)
        rotate();
}
