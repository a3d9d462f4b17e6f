// ytree.h — a small in-memory tree of a YAML (or JSON) document, built with
// libyaml, that keeps the line of every node so errors can name it. Used for
// the mesh file, the tokens file, JWKS files and JWT JSON segments.
#ifndef CP_YTREE_H
#define CP_YTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cp_ynode_kind { CP_Y_SCALAR, CP_Y_MAP, CP_Y_SEQ };

// struct cp_ynode is one node. For a map, |items| alternates key, value.
struct cp_ynode {
    enum cp_ynode_kind kind;
    unsigned line;    // 1-based line of the node's start
    bool quoted;      // scalar was quoted (so "1" is a string)
    char *str;        // scalar text (NUL-terminated), NULL otherwise
    size_t len;       // scalar length
    size_t num_items; // children (maps: 2 * pairs)
    struct cp_ynode **items;
};

// cp_ytree_parse parses the first document of |data| (|len| bytes). Anchors
// and aliases are refused (no billion laughs). On error it returns NULL and
// writes "line N: reason" into |err| (capacity |err_cap|). |max_nodes| bounds
// the number of nodes (0 = 100000). The caller frees with cp_ytree_free.
struct cp_ynode *cp_ytree_parse(const uint8_t *data, size_t len, size_t max_nodes, char *err,
                                size_t err_cap);

// cp_ytree_free frees a tree; NULL is ignored.
void cp_ytree_free(struct cp_ynode *n);

// cp_ytree_get returns the value of |key| in map |n|, or NULL.
const struct cp_ynode *cp_ytree_get(const struct cp_ynode *n, const char *key);

// cp_ytree_read_file reads a whole file (at most |max| bytes) into a new
// NUL-terminated buffer. Returns 0 or a negative errno.
int cp_ytree_read_file(const char *path, size_t max, uint8_t **out, size_t *out_len);

#endif
