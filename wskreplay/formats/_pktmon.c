/* PktMon's packet ids, in C: the twin of pktmon.PacketIds (with pktmon.network_bytes)
 * for the batch pass over a recording whose appearances are not all numbered (Windows
 * 11 24H2). Same rules, same order of ids:
 *   - numbered: an appearance joins its PktGroupId's packet unless that group was last
 *     seen more than NUMBERED_SPAN_NS before;
 *   - by content: it joins the first open packet (in the order packets were opened)
 *     whose first MATCH_BYTES network bytes are its own, that has no appearance at its
 *     (component, edge), that was last seen at most APPEARANCE_GAP_NS before, and whose
 *     bytes agree with its own where both were logged; the packet keeps the longer bytes;
 *   - every call first forgets the packets and groups last seen longer ago than those
 *     spans, oldest first (a packet joined moves to the end of that order).
 * The constants come from pktmon.py; every length is checked against its buffer. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

/* A place in an order of last use (the first member of what it orders). */
typedef struct Link {
    struct Link *prev, *next;
} Link;

typedef struct {
    Link *oldest, *newest;
} Order;

/* A node of a chained hash table (a member of what it files), and the table. */
typedef struct Chained {
    struct Chained *chain;
    uint64_t hash;
} Chained;

typedef struct {
    Chained **slots;
    size_t n_slots, n;
} Table;

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

typedef struct Open {
    Link order;
    int64_t pid, last_ns;
    struct KeyEntry *entry;          /* the packets that share its first bytes */
    int64_t (*components)[2];
    Py_ssize_t n_components, cap_components;
    uint8_t *content;
    Py_ssize_t length;
} Open;

typedef struct KeyEntry {
    Chained filed;
    Py_ssize_t key_length;
    uint8_t key[64];
    Open **packets;                  /* in the order they were opened */
    Py_ssize_t n, cap;
} KeyEntry;

typedef struct Group {
    Link order;
    Chained filed;
    int64_t group, pid, last_ns;
} Group;

typedef struct {
    PyObject_HEAD
    int64_t next_pid;
    int64_t gap_ns, span_ns;
    Py_ssize_t match_bytes;
    int ethernet, ieee80211;
    Order open;
    Table keys;
    Order by_group;
    Table groups;
} PacketIds;

static uint64_t fnv(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (Py_ssize_t k = 0; k < n; k++) h = (h ^ p[k]) * 0x100000001B3ULL;
    return h;
}

static uint64_t mix(int64_t v) {
    uint64_t x = (uint64_t)v * 0x9E3779B97F4A7C15ULL;
    return x ^ (x >> 29);
}

static int older_than(int64_t now, int64_t last, int64_t limit) {
    return (__int128)now - (__int128)last > (__int128)limit;
}

/* The first node filed under ``hash`` (follow ``chain``; other hashes share slots). */
static Chained *table_first(const Table *t, uint64_t hash) {
    return t->n_slots ? t->slots[hash & (t->n_slots - 1)] : NULL;
}

/* File ``c`` under its hash, the table doubled first when it holds as many as its slots. */
static int table_add(Table *t, Chained *c) {
    if (t->n >= t->n_slots) {
        size_t bigger = t->n_slots ? t->n_slots * 2 : 1024;
        Chained **fresh = PyMem_Calloc(bigger, sizeof(Chained *));
        if (fresh == NULL) return -1;
        for (size_t s = 0; s < t->n_slots; s++) {
            for (Chained *node = t->slots[s], *after; node != NULL; node = after) {
                after = node->chain;
                node->chain = fresh[node->hash & (bigger - 1)];
                fresh[node->hash & (bigger - 1)] = node;
            }
        }
        PyMem_Free(t->slots);
        t->slots = fresh;
        t->n_slots = bigger;
    }
    Chained **slot = &t->slots[c->hash & (t->n_slots - 1)];
    c->chain = *slot;
    *slot = c;
    t->n++;
    return 0;
}

static void table_remove(Table *t, Chained *c) {
    Chained **link = &t->slots[c->hash & (t->n_slots - 1)];
    while (*link != c) link = &(*link)->chain;
    *link = c->chain;
    t->n--;
}

static void order_remove(Order *o, Link *l) {
    if (l->prev) l->prev->next = l->next; else o->oldest = l->next;
    if (l->next) l->next->prev = l->prev; else o->newest = l->prev;
    l->prev = l->next = NULL;
}

static void order_append(Order *o, Link *l) {
    l->prev = o->newest;
    l->next = NULL;
    if (o->newest) o->newest->next = l; else o->oldest = l;
    o->newest = l;
}

#define OLDEST_OPEN(self) ((Open *)(self)->open.oldest)
#define OLDEST_GROUP(self) ((Group *)(self)->by_group.oldest)

static void drop_group(PacketIds *self, Group *g) {
    table_remove(&self->groups, &g->filed);
    order_remove(&self->by_group, &g->order);
    PyMem_Free(g);
}

static void drop_open(PacketIds *self, Open *p) {
    KeyEntry *e = p->entry;
    Py_ssize_t k = 0;
    while (e->packets[k] != p) k++;
    memmove(e->packets + k, e->packets + k + 1, (size_t)(e->n - k - 1) * sizeof(Open *));
    if (--e->n == 0) {
        table_remove(&self->keys, &e->filed);
        PyMem_Free(e->packets);
        PyMem_Free(e);
    }
    order_remove(&self->open, &p->order);
    PyMem_Free(p->components);
    PyMem_Free(p->content);
    PyMem_Free(p);
}

static void expire(PacketIds *self, int64_t now) {
    while (OLDEST_GROUP(self) && older_than(now, OLDEST_GROUP(self)->last_ns, self->span_ns))
        drop_group(self, OLDEST_GROUP(self));
    while (OLDEST_OPEN(self) && older_than(now, OLDEST_OPEN(self)->last_ns, self->gap_ns))
        drop_open(self, OLDEST_OPEN(self));
}

static int64_t numbered(PacketIds *self, int64_t group, int64_t now) {
    expire(self, now);
    const uint64_t h = mix(group);
    Group *g = NULL;
    for (Chained *c = table_first(&self->groups, h); c != NULL && g == NULL; c = c->chain)
        if (CONTAINER(c, Group, filed)->group == group) g = CONTAINER(c, Group, filed);
    if (g != NULL) {
        order_remove(&self->by_group, &g->order);
    } else {
        g = PyMem_Calloc(1, sizeof(Group));
        if (g == NULL) return -1;
        g->filed.hash = h;
        if (table_add(&self->groups, &g->filed) < 0) {
            PyMem_Free(g);
            return -1;
        }
        g->group = group;
        g->pid = self->next_pid++;
    }
    g->last_ns = now;
    order_append(&self->by_group, &g->order);
    return g->pid;
}

static Py_ssize_t network_start(PacketIds *self, const uint8_t *f, Py_ssize_t n, int64_t link) {
    Py_ssize_t at = 0;
    if (link == self->ethernet) {
        at = 14;
        while (n >= at && ((f[at - 2] == 0x81 && f[at - 1] == 0x00) ||
                           (f[at - 2] == 0x88 && f[at - 1] == 0xA8)))
            at += 4;
    } else if (link == self->ieee80211 && n >= 2) {
        const int qos = f[0] & 0x80;
        at = 24 + ((f[1] & 3) == 3 ? 6 : 0) + (qos ? 2 : 0) + (qos && (f[1] & 0x80) ? 4 : 0);
        at += 8;
    }
    return at < n ? at : n;
}

static int64_t by_content(PacketIds *self, int64_t now, int64_t component, int64_t edge,
                          const uint8_t *content, Py_ssize_t length) {
    expire(self, now);
    const Py_ssize_t key_length = length < self->match_bytes ? length : self->match_bytes;
    const uint64_t h = fnv(content, key_length) ^ (uint64_t)key_length;
    KeyEntry *e = NULL;
    for (Chained *c = table_first(&self->keys, h); c != NULL && e == NULL; c = c->chain) {
        KeyEntry *k = CONTAINER(c, KeyEntry, filed);
        if (c->hash == h && k->key_length == key_length &&
            memcmp(k->key, content, (size_t)key_length) == 0)
            e = k;
    }
    if (e != NULL) {
        for (Py_ssize_t k = 0; k < e->n; k++) {
            Open *p = e->packets[k];
            int seen = 0;
            for (Py_ssize_t c = 0; c < p->n_components && !seen; c++)
                seen = p->components[c][0] == component && p->components[c][1] == edge;
            if (seen || older_than(now, p->last_ns, self->gap_ns)) continue;
            const Py_ssize_t both = length < p->length ? length : p->length;
            if (memcmp(content, p->content, (size_t)both) != 0) continue;
            if (p->n_components == p->cap_components) {
                Py_ssize_t cap = p->cap_components * 2;
                void *more = PyMem_Realloc(p->components, (size_t)cap * sizeof(p->components[0]));
                if (more == NULL) return -1;
                p->components = more;
                p->cap_components = cap;
            }
            p->components[p->n_components][0] = component;
            p->components[p->n_components++][1] = edge;
            p->last_ns = now;
            if (length > p->length) {
                uint8_t *longer = PyMem_Malloc((size_t)length);
                if (longer == NULL) return -1;
                memcpy(longer, content, (size_t)length);
                PyMem_Free(p->content);
                p->content = longer;
                p->length = length;
            }
            order_remove(&self->open, &p->order);
            order_append(&self->open, &p->order);
            return p->pid;
        }
    } else {
        e = PyMem_Calloc(1, sizeof(KeyEntry));
        if (e == NULL) return -1;
        e->filed.hash = h;
        if (table_add(&self->keys, &e->filed) < 0) {
            PyMem_Free(e);
            return -1;
        }
        e->key_length = key_length;
        memcpy(e->key, content, (size_t)key_length);
    }
    Open *p = PyMem_Calloc(1, sizeof(Open));
    if (p == NULL) return -1;
    p->components = PyMem_Malloc(4 * sizeof(p->components[0]));
    p->content = PyMem_Malloc(length ? (size_t)length : 1);
    if (e->n == e->cap) {
        Py_ssize_t cap = e->cap ? e->cap * 2 : 2;
        Open **more = PyMem_Realloc(e->packets, (size_t)cap * sizeof(Open *));
        if (more != NULL) {
            e->packets = more;
            e->cap = cap;
        }
    }
    if (p->components == NULL || p->content == NULL || e->n == e->cap) {
        PyMem_Free(p->components);
        PyMem_Free(p->content);
        PyMem_Free(p);
        return -1;
    }
    p->cap_components = 4;
    p->n_components = 1;
    p->components[0][0] = component;
    p->components[0][1] = edge;
    memcpy(p->content, content, (size_t)length);
    p->length = length;
    p->last_ns = now;
    p->pid = self->next_pid++;
    p->entry = e;
    e->packets[e->n++] = p;
    order_append(&self->open, &p->order);
    return p->pid;
}

static int int64_column(PyObject *obj, Py_buffer *view, Py_ssize_t n, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 8 || view->len != n * 8) {
        PyErr_Format(PyExc_ValueError, "column %s: expected %zd int64 values", name, n);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

/* assign(out, time, group, numbered, buffer, at, length, linktype, component, edge,
 * buffers): each row's packet id into out, in row order. Every column holds int64s;
 * numbered rows read time and group, the others their frame at[i]:at[i]+length[i] of
 * buffers[buffer[i]] (bounded by that buffer) and its link type. */
static PyObject *assign(PacketIds *self, PyObject *args) {
    PyObject *objs[10], *buffers;
    static const char *names[10] = {"out", "time", "group", "numbered", "buffer",
                                    "at", "length", "linktype", "component", "edge"};
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOO!", &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4], &objs[5], &objs[6], &objs[7], &objs[8], &objs[9],
                          &PyList_Type, &buffers))
        return NULL;
    Py_buffer cols[10];
    for (int k = 0; k < 10; k++) cols[k].obj = NULL;
    const Py_ssize_t n_buffers = PyList_GET_SIZE(buffers);
    Py_buffer *held = PyMem_Calloc(n_buffers ? (size_t)n_buffers : 1, sizeof(Py_buffer));
    PyObject *result = NULL;
    Py_ssize_t got = 0, n = -1;
    if (held == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n_buffers; got++)
        if (PyObject_GetBuffer(PyList_GET_ITEM(buffers, got), &held[got], PyBUF_SIMPLE) < 0)
            goto done;
    {
        Py_buffer probe;
        if (PyObject_GetBuffer(objs[1], &probe, PyBUF_SIMPLE) < 0) goto done;
        n = probe.len / 8;
        PyBuffer_Release(&probe);
    }
    for (int k = 0; k < 10; k++)
        if (int64_column(objs[k], &cols[k], n, names[k]) < 0) goto done;
    if (cols[0].readonly) {
        PyErr_SetString(PyExc_ValueError, "column out: read-only");
        goto done;
    }
    int64_t *out = cols[0].buf;
    const int64_t *t = cols[1].buf, *group = cols[2].buf, *by_group = cols[3].buf;
    const int64_t *which = cols[4].buf, *at = cols[5].buf, *length = cols[6].buf;
    const int64_t *link = cols[7].buf, *component = cols[8].buf, *edge = cols[9].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t pid;
        if (by_group[i]) {
            pid = numbered(self, group[i], t[i]);
        } else {
            if (which[i] < 0 || which[i] >= n_buffers || at[i] < 0 || length[i] < 0 ||
                at[i] > held[which[i]].len - length[i]) {
                PyErr_Format(PyExc_ValueError, "row %zd: frame outside its buffer", i);
                goto done;
            }
            const uint8_t *frame = (const uint8_t *)held[which[i]].buf + at[i];
            const Py_ssize_t start = network_start(self, frame, (Py_ssize_t)length[i], link[i]);
            pid = by_content(self, t[i], component[i], edge[i], frame + start,
                             (Py_ssize_t)length[i] - start);
        }
        if (pid < 0) {
            PyErr_NoMemory();
            goto done;
        }
        out[i] = pid;
    }
    result = Py_NewRef(Py_None);
done:
    for (int k = 0; k < 10; k++)
        if (cols[k].obj != NULL) PyBuffer_Release(&cols[k]);
    for (Py_ssize_t k = 0; k < got; k++) PyBuffer_Release(&held[k]);
    PyMem_Free(held);
    return result;
}

static int init(PacketIds *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"gap_ns", "span_ns", "match_bytes", "ethernet", "ieee80211", NULL};
    long long gap, span;
    Py_ssize_t match;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LLnii", kw, &gap, &span, &match,
                                     &self->ethernet, &self->ieee80211))
        return -1;
    if (match < 0 || match > 64) {
        PyErr_SetString(PyExc_ValueError, "match_bytes: 0 to 64");
        return -1;
    }
    self->gap_ns = gap;
    self->span_ns = span;
    self->match_bytes = match;
    return 0;
}

static void dealloc(PacketIds *self) {
    while (OLDEST_OPEN(self)) drop_open(self, OLDEST_OPEN(self));
    while (OLDEST_GROUP(self)) drop_group(self, OLDEST_GROUP(self));
    PyMem_Free(self->keys.slots);
    PyMem_Free(self->groups.slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *get_next(PacketIds *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->next_pid);
}

static PyMethodDef methods[] = {
    {"assign", (PyCFunction)assign, METH_VARARGS, "Each row's packet id, in row order."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef getset[] = {
    {"next", (getter)get_next, NULL, "The id the next new packet gets.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PacketIdsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wskreplay.formats._pktmon.PacketIds",
    .tp_basicsize = sizeof(PacketIds),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "pktmon.PacketIds over arrays of appearances.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)init,
    .tp_dealloc = (destructor)dealloc,
    .tp_methods = methods,
    .tp_getset = getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pktmon", NULL, -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pktmon(void) {
    if (PyType_Ready(&PacketIdsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "PacketIds", (PyObject *)&PacketIdsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
