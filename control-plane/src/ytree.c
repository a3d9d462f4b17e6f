// ytree.c — libyaml event stream to a small tree with line numbers.
#include "ytree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define CP_YTREE_MAX_DEPTH 64

static struct cp_ynode *node_new(enum cp_ynode_kind kind, unsigned line)
{
    struct cp_ynode *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        abort();
    }
    n->kind = kind;
    n->line = line;
    return n;
}

void cp_ytree_free(struct cp_ynode *n)
{
    if (n == NULL) {
        return;
    }
    for (size_t i = 0; i < n->num_items; i++) {
        cp_ytree_free(n->items[i]);
    }
    free(n->items);
    free(n->str);
    free(n);
}

static void node_add(struct cp_ynode *parent, struct cp_ynode *child)
{
    // Grow by doubling; counts are bounded by max_nodes.
    size_t n = parent->num_items;
    if ((n & (n - 1)) == 0) {
        size_t cap = n == 0 ? 4 : n * 2;
        if (cap < 4) {
            cap = 4;
        }
        struct cp_ynode **items = realloc(parent->items, cap * sizeof(*items));
        if (items == NULL) {
            abort();
        }
        parent->items = items;
    }
    parent->items[parent->num_items++] = child;
}

struct cp_ynode *cp_ytree_parse(const uint8_t *data, size_t len, size_t max_nodes, char *err,
                                size_t err_cap)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    struct cp_ynode *stack[CP_YTREE_MAX_DEPTH];
    size_t depth = 0;
    size_t count = 0;
    struct cp_ynode *root = NULL;
    bool done = false;

    if (max_nodes == 0) {
        max_nodes = 100000;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, err_cap, "line 0: yaml parser init failed");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, data, len);
    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            snprintf(err, err_cap, "line %lu: %s%s%s", (unsigned long)parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "syntax error", parser.context ? " " : "",
                     parser.context ? parser.context : "");
            goto out_fail;
        }
        unsigned line = (unsigned)ev.start_mark.line + 1;
        struct cp_ynode *n = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            done = root != NULL || ev.type == YAML_STREAM_END_EVENT;
            break;
        case YAML_ALIAS_EVENT:
            snprintf(err, err_cap, "line %u: aliases are not supported", line);
            yaml_event_delete(&ev);
            goto out_fail;
        case YAML_SCALAR_EVENT:
            if (ev.data.scalar.anchor != NULL) {
                snprintf(err, err_cap, "line %u: anchors are not supported", line);
                yaml_event_delete(&ev);
                goto out_fail;
            }
            n = node_new(CP_Y_SCALAR, line);
            n->len = ev.data.scalar.length;
            n->str = malloc(n->len + 1);
            if (n->str == NULL) {
                abort();
            }
            memcpy(n->str, ev.data.scalar.value, n->len);
            n->str[n->len] = '\0';
            n->quoted = ev.data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                        ev.data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            const yaml_char_t *anchor = ev.type == YAML_SEQUENCE_START_EVENT
                                            ? ev.data.sequence_start.anchor
                                            : ev.data.mapping_start.anchor;
            if (anchor != NULL) {
                snprintf(err, err_cap, "line %u: anchors are not supported", line);
                yaml_event_delete(&ev);
                goto out_fail;
            }
            n = node_new(ev.type == YAML_SEQUENCE_START_EVENT ? CP_Y_SEQ : CP_Y_MAP, line);
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0) {
                depth--;
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
        if (n != NULL) {
            if (++count > max_nodes) {
                snprintf(err, err_cap, "line %u: document too large", line);
                cp_ytree_free(n);
                goto out_fail;
            }
            if (depth > 0) {
                node_add(stack[depth - 1], n);
            } else if (root == NULL) {
                root = n;
            } else {
                cp_ytree_free(n);
            }
            if (n->kind != CP_Y_SCALAR) {
                if (depth >= CP_YTREE_MAX_DEPTH) {
                    snprintf(err, err_cap, "line %u: nesting too deep", line);
                    goto out_fail;
                }
                stack[depth++] = n;
            }
        }
    }
    yaml_parser_delete(&parser);
    if (root == NULL) {
        snprintf(err, err_cap, "line 1: empty document");
    }
    return root;

out_fail:
    yaml_parser_delete(&parser);
    cp_ytree_free(root);
    return NULL;
}

const struct cp_ynode *cp_ytree_get(const struct cp_ynode *n, const char *key)
{
    if (n == NULL || n->kind != CP_Y_MAP) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < n->num_items; i += 2) {
        const struct cp_ynode *k = n->items[i];
        if (k->kind == CP_Y_SCALAR && strcmp(k->str, key) == 0) {
            return n->items[i + 1];
        }
    }
    return NULL;
}

int cp_ytree_read_file(const char *path, size_t max, uint8_t **out, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap + 1);
    if (buf == NULL) {
        abort();
    }
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                free(buf);
                close(fd);
                return -EFBIG;
            }
            cap *= 2;
            uint8_t *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                abort();
            }
            buf = nb;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int e = -errno;
            free(buf);
            close(fd);
            return e;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
        if (len > max) {
            free(buf);
            close(fd);
            return -EFBIG;
        }
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}
