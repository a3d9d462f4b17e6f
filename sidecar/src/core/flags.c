// flags.c — command-line flags with SEAM_* environment fallback (sc/flags.h).
#include "sc/flags.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sc/parse.h"

char *sc_flags_env_name(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    const char *pfx = "SEAM_";
    for (; *pfx && o + 1 < cap; pfx++) {
        out[o++] = *pfx;
    }
    for (; *name && o + 1 < cap; name++) {
        out[o++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
    }
    out[o] = '\0';
    return out;
}

void sc_strlist_cleanup(struct sc_strlist *l)
{
    for (size_t i = 0; i < l->num; i++) {
        free(l->items[i]);
    }
    free(l->items);
    l->items = NULL;
    l->num = 0;
}

static int list_add(struct sc_strlist *l, const char *v, size_t len)
{
    char **items = realloc(l->items, (l->num + 1) * sizeof(char *));
    if (items == NULL) {
        return -1;
    }
    l->items = items;
    l->items[l->num] = strndup(v, len);
    if (l->items[l->num] == NULL) {
        return -1;
    }
    l->num++;
    return 0;
}

// set_value converts |v| for flag |f|. |from| says where it came from, for
// the error message.
static int set_value(struct sc_flag *f, const char *v, const char *from, char *err, size_t cap)
{
    const char *why = NULL;
    switch (f->type) {
    case SC_FLAG_STRING:
        if (*v == '\0') {
            snprintf(err, cap, "%s --%s: empty value", from, f->name);
            return -1;
        }
        *(const char **)f->out = v;
        return 0;
    case SC_FLAG_LIST: {
        struct sc_strlist *l = f->out;
        if (strcmp(from, "environment") == 0) {
            // Comma-separated in the environment.
            const char *p = v;
            while (*p) {
                const char *c = strchr(p, ',');
                size_t n = c ? (size_t)(c - p) : strlen(p);
                if (n > 0 && list_add(l, p, n) != 0) {
                    snprintf(err, cap, "out of memory");
                    return -1;
                }
                p += n + (c ? 1 : 0);
            }
        } else if (*v == '\0' || list_add(l, v, strlen(v)) != 0) {
            snprintf(err, cap, "%s --%s: empty value", from, f->name);
            return -1;
        }
        return 0;
    }
    case SC_FLAG_INT: {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno != 0 ||
            ((f->min != 0 || f->max != 0) && (n < f->min || n > f->max))) {
            if (f->min != 0 || f->max != 0) {
                snprintf(err, cap, "%s --%s: \"%s\" is not an integer in [%lld, %lld]", from,
                         f->name, v, (long long)f->min, (long long)f->max);
            } else {
                snprintf(err, cap, "%s --%s: \"%s\" is not an integer", from, f->name, v);
            }
            return -1;
        }
        *(int64_t *)f->out = n;
        return 0;
    }
    case SC_FLAG_DURATION:
        if (sc_parse_duration_ms(v, f->out, &why) != 0) {
            snprintf(err, cap, "%s --%s: bad duration \"%s\": %s", from, f->name, v,
                     why ? why : "invalid");
            return -1;
        }
        return 0;
    case SC_FLAG_SIZE:
        if (sc_parse_size(v, f->out, &why) != 0) {
            snprintf(err, cap, "%s --%s: bad size \"%s\": %s", from, f->name, v,
                     why ? why : "invalid");
            return -1;
        }
        return 0;
    case SC_FLAG_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0) {
            *(bool *)f->out = true;
        } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcmp(v, "no") == 0) {
            *(bool *)f->out = false;
        } else {
            snprintf(err, cap, "%s --%s: \"%s\" is not true or false", from, f->name, v);
            return -1;
        }
        return 0;
    }
    return -1;
}

static struct sc_flag *find(struct sc_flag *flags, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) {
            return &flags[i];
        }
    }
    return NULL;
}

int sc_flags_parse(struct sc_flag *flags, size_t num_flags, int argc, char **argv, char *err,
                   size_t err_cap)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return 1;
        }
    }
    for (size_t i = 0; i < num_flags; i++) {
        flags[i].seen = false;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            snprintf(err, err_cap, "unexpected argument \"%s\"", a);
            return -1;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        struct sc_flag *f = find(flags, num_flags, name, nlen);
        if (f == NULL) {
            snprintf(err, err_cap, "unknown flag --%.*s", (int)nlen, name);
            return -1;
        }
        const char *v = NULL;
        if (eq != NULL) {
            v = eq + 1;
        } else if (f->type == SC_FLAG_BOOL) {
            v = "true";
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, err_cap, "flag --%s needs a value", f->name);
            return -1;
        }
        if (f->seen && f->type != SC_FLAG_LIST) {
            snprintf(err, err_cap, "flag --%s given more than once", f->name);
            return -1;
        }
        if (set_value(f, v, "flag", err, err_cap) != 0) {
            return -1;
        }
        f->seen = true;
    }
    for (size_t i = 0; i < num_flags; i++) {
        struct sc_flag *f = &flags[i];
        if (f->seen) {
            continue;
        }
        char env[128];
        const char *v = getenv(sc_flags_env_name(f->name, env, sizeof(env)));
        if (v != NULL && *v != '\0') {
            if (set_value(f, v, "environment", err, err_cap) != 0) {
                size_t l = strlen(err);
                snprintf(err + l, err_cap - l, " (from %s)", env);
                return -1;
            }
            f->seen = true;
        }
        if (!f->seen && f->required) {
            snprintf(err, err_cap, "missing required flag --%s (or %s)", f->name, env);
            return -1;
        }
    }
    return 0;
}

void sc_flags_usage(FILE *out, const struct sc_flag *flags, size_t num_flags)
{
    for (size_t i = 0; i < num_flags; i++) {
        const struct sc_flag *f = &flags[i];
        char env[128];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s", f->name, f->type == SC_FLAG_BOOL ? "" : " VALUE");
        fprintf(out, "  %-28s %s%s (env %s)\n", left, f->help ? f->help : "",
                f->required ? " [required]" : "", sc_flags_env_name(f->name, env, sizeof(env)));
    }
}
