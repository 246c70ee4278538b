/* The walks' sequential loops, in C: following each pcap record's (or pcapng
 * block's) length to the next one. The C twin of pcap._record_starts (with the header
 * fields pcap._walk_pcap then gathers), of the EPB run in pcapng_fast._blocks, and of the
 * ETL record walk of one inflated buffer (etl.EtlFile._records): the same
 * values, every read bounded by the buffer. They come back as native int64s in a bytes
 * object (numpy reads it without a copy). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define RELEASE_RECORDS 0x10000
#define RELEASE_SPAN ((Py_ssize_t)64 << 20)

static uint32_t word(const uint8_t *p, int big) {
    if (big)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    int64_t *at;
    Py_ssize_t n, cap;
} Offsets;

static int offsets_add(Offsets *o, int64_t pos) {
    if (o->n == o->cap) {
        Py_ssize_t cap = o->cap ? o->cap * 2 : 4096;
        int64_t *grown = PyMem_Realloc(o->at, (size_t)cap * sizeof(int64_t));
        if (grown == NULL) return -1;
        o->at = grown;
        o->cap = cap;
    }
    o->at[o->n++] = pos;
    return 0;
}

static PyObject *offsets_finish(Offsets *o) {
    PyObject *out = PyBytes_FromStringAndSize((const char *)o->at, o->n * (Py_ssize_t)sizeof(int64_t));
    PyMem_Free(o->at);
    return out;
}

/* pcap_records(buffer, pos, big_endian, release) -> bytes: for every record header from pos
 * on, five native int64s: its offset and its four fields (seconds, fraction, captured and
 * original length), read in the same pass. A last header too short to hold its length is
 * still listed (the caller reports it cut short); a header cut short has zero fields, as
 * pcap._walk_pcap gathers them. release() is called every 65536 records or 64 MiB of
 * file, as pcap._record_starts calls it. */
static PyObject *pcap_records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    Py_ssize_t pos;
    int big;
    PyObject *release;
    if (!PyArg_ParseTuple(args, "y*npO", &in, &pos, &big, &release)) return NULL;
    const uint8_t *buf = (const uint8_t *)in.buf;
    const Py_ssize_t size = in.len;
    Offsets o = {NULL, 0, 0};
    Py_ssize_t since = pos, records = 0;
    while (pos >= 0 && pos < size) {
        const int whole = size - pos >= 16;
        if (offsets_add(&o, pos) < 0) goto fail;
        for (int k = 0; k < 4; k++) {
            if (offsets_add(&o, 0) < 0) goto fail;
        }
        records++;
        if (size - pos < 12) break;
        int64_t *row = o.at + o.n - 5;
        const uint32_t incl = word(buf + pos + 8, big);
        if (whole) {
            row[1] = word(buf + pos, big);
            row[2] = word(buf + pos + 4, big);
            row[3] = incl;
            row[4] = word(buf + pos + 12, big);
        }
        pos += 16 + (Py_ssize_t)incl;
        if (!(records % RELEASE_RECORDS) || pos - since >= RELEASE_SPAN) {
            PyObject *r = PyObject_CallNoArgs(release);
            if (r == NULL) goto fail;
            Py_DECREF(r);
            since = pos;
        }
    }
    PyBuffer_Release(&in);
    return offsets_finish(&o);
fail:
    PyBuffer_Release(&in);
    PyMem_Free(o.at);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return NULL;
}

/* pcapng_epb_run(buffer, pos, epb_type, release) -> (bytes, stop): the consecutive
 * little-endian Enhanced Packet Blocks from pos whose length is sound (>= 32, a multiple of
 * 4, inside the buffer), each as EPB_FIELDS native int64s read in the same pass
 * (pcapng_fast._gather_fields gathers the same): its offset, total length, interface id,
 * timestamp high and low words, captured and original length, and the trailing copy of its
 * length; and where the run stops: the first block that is not one. release() is called
 * every 65536 blocks or 64 MiB of file, as the Python walks call it. */
#define EPB_FIELDS 8
static PyObject *pcapng_epb_run(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    Py_ssize_t pos;
    unsigned long epb_type;
    PyObject *release;
    if (!PyArg_ParseTuple(args, "y*nkO", &in, &pos, &epb_type, &release)) return NULL;
    const uint8_t *buf = (const uint8_t *)in.buf;
    const Py_ssize_t size = in.len;
    Offsets o = {NULL, 0, 0};
    Py_ssize_t since = pos;
    while (pos >= 0 && size - pos >= 8) {
        uint32_t type = word(buf + pos, 0), len = word(buf + pos + 4, 0);
        if (type != epb_type || len < 32 || len % 4 || (Py_ssize_t)len > size - pos) break;
        const int64_t row[EPB_FIELDS] = {
            pos,
            len,
            word(buf + pos + 8, 0),
            word(buf + pos + 12, 0),
            word(buf + pos + 16, 0),
            word(buf + pos + 20, 0),
            word(buf + pos + 24, 0),
            word(buf + pos + len - 4, 0),
        };
        for (int k = 0; k < EPB_FIELDS; k++) {
            if (offsets_add(&o, row[k]) < 0) goto fail;
        }
        pos += len;
        if (!((o.n / EPB_FIELDS) % RELEASE_RECORDS) || pos - since >= RELEASE_SPAN) {
            PyObject *r = PyObject_CallNoArgs(release);
            if (r == NULL) goto fail;
            Py_DECREF(r);
            since = pos;
        }
    }
    PyBuffer_Release(&in);
    PyObject *rows = offsets_finish(&o);
    if (rows == NULL) return NULL;
    return Py_BuildValue("Nn", rows, pos);
fail:
    PyBuffer_Release(&in);
    PyMem_Free(o.at);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return NULL;
}

/* etl_records(data, bounds) -> (bytes, bad): the records of ETL buffers inflated one after
 * another into data, bounds holding each buffer's (start, end) as native int64s. For every
 * record, four native int64s: its offset in data, its size, its header type (0x100 for a
 * WPP message) and its buffer's index; the C twin of etl.EtlFile._records, with the same
 * checks. bad is the index of the first buffer whose records are unsound (its records are
 * not listed and the walk stops there: the reference then names the fault), else -1. */
#define ETL_BUFFER_HEADER 0x48
#define ETL_WPP_MESSAGE 0x100
static int etl_header_size(unsigned kind, int *size_at_4) {
    *size_at_4 = 0;
    switch (kind) {
    case 0x01: case 0x02: *size_at_4 = 1; return 0x20;
    case 0x03: case 0x04: *size_at_4 = 1; return 0x18;
    case 0x10: case 0x11: *size_at_4 = 1; return 0x10;
    case 0x0A: case 0x14: return 0x30;
    case 0x0B: case 0x15: return 0x48;
    case 0x12: case 0x13: return 0x50;
    default: return -1;
    }
}

static PyObject *etl_records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in, bounds;
    if (!PyArg_ParseTuple(args, "y*y*", &in, &bounds)) return NULL;
    const uint8_t *buf = (const uint8_t *)in.buf;
    const int64_t *edges = (const int64_t *)bounds.buf;
    const Py_ssize_t buffers = bounds.len / (Py_ssize_t)(2 * sizeof(int64_t));
    Offsets o = {NULL, 0, 0};
    Py_ssize_t bad = -1;
    for (Py_ssize_t b = 0; b < buffers && bad < 0; b++) {
        const int64_t start = edges[2 * b], end = edges[2 * b + 1];
        if (start < 0 || end < start || end > in.len) {
            bad = b;
            break;
        }
        const Py_ssize_t first = o.n;
        int64_t pos = start + ETL_BUFFER_HEADER;
        while (pos + 4 <= end) {
            const uint32_t marker = word(buf + pos, 0);
            if (marker == 0xFFFFFFFFu) break;
            const unsigned top = marker >> 24;
            int64_t size, need;
            unsigned kind;
            if ((top & 0xC0) == 0xC0) {
                int size_at_4;
                kind = (marker >> 16) & 0xFF;
                need = etl_header_size(kind, &size_at_4);
                const int64_t at = pos + (size_at_4 ? 4 : 0);
                if (need < 0 || at + 2 > end) {
                    bad = b;
                    break;
                }
                size = (int64_t)buf[at] | (int64_t)buf[at + 1] << 8;
            } else if (top == 0x90) {
                kind = ETL_WPP_MESSAGE;
                size = marker & 0xFFFF;
                need = 8;
            } else {
                bad = b;
                break;
            }
            if (size < need || pos + size > end) {
                bad = b;
                break;
            }
            const int64_t row[4] = {pos, size, kind, b};
            for (int k = 0; k < 4; k++) {
                if (offsets_add(&o, row[k]) < 0) goto fail;
            }
            pos += (size + 7) & ~(int64_t)7;
        }
        if (bad >= 0) o.n = first;
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&bounds);
    PyObject *rows = offsets_finish(&o);
    if (rows == NULL) return NULL;
    return Py_BuildValue("Nn", rows, bad);
fail:
    PyBuffer_Release(&in);
    PyBuffer_Release(&bounds);
    PyMem_Free(o.at);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return NULL;
}

static PyMethodDef methods[] = {
    {"pcap_records", pcap_records, METH_VARARGS,
     "Offset, seconds, fraction, captured and original length of each pcap record from pos."},
    {"pcapng_epb_run", pcapng_epb_run, METH_VARARGS,
     "The fields of the run of sound Enhanced Packet Blocks from pos, and where it stops."},
    {"etl_records", etl_records, METH_VARARGS,
     "Offset, size, header type and buffer of each record of inflated ETL buffers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
