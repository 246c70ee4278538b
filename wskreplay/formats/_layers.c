/* The layer walk's common path, in C: a unit that starts as Ethernet and holds IPv4 or
 * IPv6 (no option or extension header in the way of TCP, not a fragment) and a TCP header
 * is taken through those layers in one pass and left as a TCP outcome, with the columns
 * the walk's handlers (layers/link.py ethernet, layers/ip.py ipv4, ipv6 and tcp) would
 * have written. Any unit that meets anything else (an 802.3 length, a VLAN tag, a bad or
 * cut header, a fragment, another protocol) is left untouched, for the walk to take from
 * its start: the walk is the reference, and the only judge of every other case. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define ETHERNET 16
#define OUTCOME_TCP 1
#define V4_MAPPED_LO_PREFIX ((uint64_t)0xFFFF << 32)

static inline uint64_t be(const uint8_t *p, int size) {
    uint64_t v = 0;
    for (int k = 0; k < size; k++) v = v << 8 | p[k];
    return v;
}

typedef struct {
    Py_buffer view;
    const char *name;
} Column;

static int column(PyObject *obj, Column *c, Py_ssize_t itemsize, Py_ssize_t n) {
    if (PyObject_GetBuffer(obj, &c->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (c->view.itemsize != itemsize || c->view.len != n * itemsize) {
        PyErr_Format(PyExc_ValueError, "column %s: %zd bytes of %zd-byte items, expected %zd items",
                     c->name, c->view.len, c->view.itemsize, n);
        PyBuffer_Release(&c->view);
        c->view.obj = NULL;
        return -1;
    }
    return 0;
}

/* plain_tcp(buffer, pos, end, code, path, ip_path, ip_end, src_hi, src_lo, dst_hi, dst_lo,
 * ethernet_path, ipv4_path, ipv6_path) -> int: the units taken to TCP. The columns are
 * the walk's Units (int64, int64, int16, int32, int32, int64, then four uint64); the paths
 * are the ids the walk's labels would give "ethernet", then "ipv4" or "ipv6" after it (a
 * negative id: that kind is left to the walk). */
static PyObject *plain_tcp(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    PyObject *objs[10];
    long long eth_path, v4_path, v6_path;
    if (!PyArg_ParseTuple(args, "y*OOOOOOOOOOLLL", &in, &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4], &objs[5], &objs[6], &objs[7], &objs[8], &objs[9], &eth_path,
                          &v4_path, &v6_path))
        return NULL;
    static const char *names[10] = {"pos", "end", "code", "path", "ip_path",
                                    "ip_end", "src_hi", "src_lo", "dst_hi", "dst_lo"};
    static const Py_ssize_t sizes[10] = {8, 8, 2, 4, 4, 8, 8, 8, 8, 8};
    Column cols[10];
    for (int k = 0; k < 10; k++) {
        cols[k].name = names[k];
        cols[k].view.obj = NULL;
    }
    Py_ssize_t n = -1, taken = 0;
    PyObject *result = NULL;
    {
        Py_buffer probe;
        if (PyObject_GetBuffer(objs[0], &probe, PyBUF_SIMPLE) < 0) goto done;
        n = probe.len / 8;
        PyBuffer_Release(&probe);
    }
    for (int k = 0; k < 10; k++)
        if (column(objs[k], &cols[k], sizes[k], n) < 0) goto done;
    if (eth_path < 0 || eth_path > INT32_MAX || v4_path > INT32_MAX || v6_path > INT32_MAX) {
        result = PyLong_FromLong(0);
        goto done;
    }
    const uint8_t *buf = (const uint8_t *)in.buf;
    const int64_t size = (int64_t)in.len;
    int64_t *pos = cols[0].view.buf, *end = cols[1].view.buf, *ip_end = cols[5].view.buf;
    int16_t *code = cols[2].view.buf;
    int32_t *path = cols[3].view.buf, *ip_path = cols[4].view.buf;
    uint64_t *src_hi = cols[6].view.buf, *src_lo = cols[7].view.buf;
    uint64_t *dst_hi = cols[8].view.buf, *dst_lo = cols[9].view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (code[i] != ETHERNET) continue;
        int64_t at = pos[i], stop = end[i];
        if (at < 0 || stop > size || at + 14 > stop) continue;
        const uint64_t etype = be(buf + at + 12, 2);
        at += 14;
        uint64_t shi, slo, dhi, dlo;
        int64_t wire_end;
        int32_t ip_label;
        if (etype == 0x0800) {
            if (v4_path < 0 || at + 20 > stop) continue;
            const uint64_t head = be(buf + at, 8);
            const int64_t ihl = (int64_t)((head >> 56) & 0xF) * 4;
            const int64_t total = (int64_t)((head >> 32) & 0xFFFF);
            if ((head >> 60) != 4 || ihl < 20 || (total != 0 && total < ihl)) continue;
            if (at + ihl > stop) continue;
            if ((head & 0x3FFF) != 0 || buf[at + 9] != 6) continue;
            const uint64_t addrs = be(buf + at + 12, 8);
            shi = dhi = 0;
            slo = V4_MAPPED_LO_PREFIX | (addrs >> 32);
            dlo = V4_MAPPED_LO_PREFIX | (addrs & 0xFFFFFFFF);
            wire_end = total == 0 ? stop : at + total;
            at += ihl;
            ip_label = (int32_t)v4_path;
        } else if (etype == 0x86DD) {
            if (v6_path < 0 || at + 40 > stop) continue;
            if ((buf[at] >> 4) != 6 || buf[at + 6] != 6) continue;
            const int64_t length = (int64_t)be(buf + at + 4, 2);
            shi = be(buf + at + 8, 8);
            slo = be(buf + at + 16, 8);
            dhi = be(buf + at + 24, 8);
            dlo = be(buf + at + 32, 8);
            wire_end = length == 0 ? stop : at + 40 + length;
            at += 40;
            ip_label = (int32_t)v6_path;
        } else {
            continue;
        }
        const int64_t cut = stop < wire_end ? stop : wire_end;
        if (at + 16 > cut) continue;
        const int64_t header = (int64_t)(buf[at + 12] >> 4) * 4;
        if (header < 20 || wire_end - at < header) continue;
        pos[i] = at;
        end[i] = cut;
        ip_end[i] = wire_end;
        code[i] = OUTCOME_TCP;
        ip_path[i] = (int32_t)eth_path;
        path[i] = ip_label;
        src_hi[i] = shi;
        src_lo[i] = slo;
        dst_hi[i] = dhi;
        dst_lo[i] = dlo;
        taken++;
    }
    result = PyLong_FromSsize_t(taken);
done:
    for (int k = 0; k < 10; k++)
        if (cols[k].view.obj != NULL) PyBuffer_Release(&cols[k].view);
    PyBuffer_Release(&in);
    return result;
}

static PyMethodDef methods[] = {
    {"plain_tcp", plain_tcp, METH_VARARGS,
     "Take the units that are plain Ethernet, IPv4 or IPv6, and TCP to their TCP outcome."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_layers", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__layers(void) { return PyModule_Create(&module); }
