/* LZ77 XPRESS decompression ([MS-XCA] 2.4), the C twin of xpress.decompress_python.
 * Same checks, same error messages: every read is bounded by the input, every write by the
 * size the caller expects. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static PyObject *xpress_decompress(PyObject *self, PyObject *args) {
    Py_buffer in;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n", &in, &size)) return NULL;
    if (size < 0) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        PyBuffer_Release(&in);
        return NULL;
    }
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *src = (const uint8_t *)in.buf;
    const Py_ssize_t n = in.len;
    Py_ssize_t pos = 0, o = 0, half = -1;
    uint32_t flags = 0;
    int count = 0;
    char msg[160];
    msg[0] = 0;

    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (count == 0) {
            if (pos + 4 > n) break;
            flags = le32(src + pos);
            pos += 4;
            count = 32;
        }
        count--;
        if (!((flags >> count) & 1)) {
            /* A run of literals (the zero flag bits from this one down) copied at once. */
            const uint32_t below = flags & ((2u << count) - 1);
            Py_ssize_t run = below ? count - (31 - __builtin_clz(below)) : count + 1;
            if (run > n - pos) run = n - pos;
            if (run <= 0) break;
            if (run > size - o) {
                pos += size - o;
                o = size;
                snprintf(msg, sizeof msg, "literal at input %zd past the expected %zd bytes", pos, size);
                break;
            }
            memcpy(dst + o, src + pos, (size_t)run);
            o += run;
            pos += run;
            count -= (int)(run - 1);
            continue;
        }
        if (pos >= n) break;
        if (pos + 2 > n) { snprintf(msg, sizeof msg, "match word cut short at input %zd", pos); break; }
        uint32_t word = (uint32_t)src[pos] | (uint32_t)src[pos + 1] << 8;
        pos += 2;
        Py_ssize_t length = word & 7;
        Py_ssize_t offset = (word >> 3) + 1;
        if (length == 7) {
            if (half < 0) {
                if (pos >= n) { snprintf(msg, sizeof msg, "length nibble cut short at input %zd", pos); break; }
                length = src[pos] & 0xF;
                half = pos++;
            } else {
                length = src[half] >> 4;
                half = -1;
            }
            if (length == 15) {
                if (pos >= n) { snprintf(msg, sizeof msg, "length byte cut short at input %zd", pos); break; }
                length = src[pos++];
                if (length == 255) {
                    if (pos + 2 > n) { snprintf(msg, sizeof msg, "16-bit length cut short at input %zd", pos); break; }
                    length = (Py_ssize_t)src[pos] | (Py_ssize_t)src[pos + 1] << 8;
                    pos += 2;
                    if (length == 0) {
                        if (pos + 4 > n) { snprintf(msg, sizeof msg, "32-bit length cut short at input %zd", pos); break; }
                        length = (Py_ssize_t)le32(src + pos);
                        pos += 4;
                    }
                    if (length < 22) {
                        snprintf(msg, sizeof msg, "match length %zd below 22 at input %zd", length, pos);
                        break;
                    }
                    length -= 22;
                }
                length += 15;
            }
            length += 7;
        }
        length += 3;
        if (offset > o) {
            snprintf(msg, sizeof msg, "match offset %zd reaches before the output start at input %zd", offset, pos);
            break;
        }
        if (length > size - o) {
            snprintf(msg, sizeof msg, "match at input %zd runs past the expected %zd bytes", pos, size);
            break;
        }
        if (offset >= length) {
            memcpy(dst + o, dst + o - offset, (size_t)length);
            o += length;
        } else {
            for (Py_ssize_t i = 0; i < length; i++, o++) dst[o] = dst[o - offset];
        }
    }
    if (!msg[0] && o != size)
        snprintf(msg, sizeof msg, "decompressed to %zd bytes, expected %zd", o, size);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&in);
    if (msg[0]) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, msg);
        return NULL;
    }
    return out;
}

/* Greedy LZ77 XPRESS compression, the stream layout of xpress.compress_python: a 3-byte
   hash table (last position per bucket), matches within 8 KiB, lengths up to 65538. */
#define HASH_BITS 15
static PyObject *xpress_compress(PyObject *self, PyObject *args) {
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in)) return NULL;
    const unsigned char *src = in.buf;
    Py_ssize_t n = in.len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + n / 8 + 64);
    int32_t *table = PyMem_Calloc((size_t)1 << HASH_BITS, sizeof(int32_t));
    if (!out || !table) {
        Py_XDECREF(out);
        PyMem_Free(table);
        PyBuffer_Release(&in);
        return PyErr_NoMemory();
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    Py_ssize_t o = 0, pos = 0, half = -1;
    Py_BEGIN_ALLOW_THREADS
    do {
        Py_ssize_t flag_at = o;
        uint32_t flags = 0;
        o += 4;
        for (int bit = 0; bit < 32; bit++) {
            if (pos >= n) {
                flags |= 1u << (31 - bit);
                continue;
            }
            Py_ssize_t length = 0, cand = -1;
            if (n - pos >= 3) {
                uint32_t key = src[pos] | src[pos + 1] << 8 | (uint32_t)src[pos + 2] << 16;
                uint32_t h = (key * 2654435761u) >> (32 - HASH_BITS);
                cand = (Py_ssize_t)table[h] - 1;
                table[h] = (int32_t)(pos + 1);
                if (cand >= 0 && pos - cand <= 8192) {
                    Py_ssize_t limit = n - pos < 65538 ? n - pos : 65538;
                    while (length < limit && src[cand + length] == src[pos + length]) length++;
                }
            }
            if (length < 3) {
                dst[o++] = src[pos++];
                continue;
            }
            flags |= 1u << (31 - bit);
            Py_ssize_t code = length - 3;
            uint16_t token = (uint16_t)(((pos - cand - 1) << 3) | (code < 7 ? code : 7));
            dst[o++] = token & 0xFF;
            dst[o++] = token >> 8;
            if (code >= 7) {
                Py_ssize_t rest = code - 7, nibble = rest < 15 ? rest : 15;
                if (half < 0) {
                    half = o;
                    dst[o++] = (unsigned char)nibble;
                } else {
                    dst[half] |= (unsigned char)(nibble << 4);
                    half = -1;
                }
                if (rest >= 15) {
                    rest -= 15;
                    if (rest < 255) {
                        dst[o++] = (unsigned char)rest;
                    } else {
                        dst[o++] = 255;
                        dst[o++] = code & 0xFF;
                        dst[o++] = (code >> 8) & 0xFF;
                    }
                }
            }
            pos += length;
        }
        dst[flag_at] = flags & 0xFF;
        dst[flag_at + 1] = (flags >> 8) & 0xFF;
        dst[flag_at + 2] = (flags >> 16) & 0xFF;
        dst[flag_at + 3] = (unsigned char)(flags >> 24);
    } while (pos < n);
    Py_END_ALLOW_THREADS
    PyMem_Free(table);
    PyBuffer_Release(&in);
    if (_PyBytes_Resize(&out, o) < 0) return NULL;
    return out;
}

static PyMethodDef methods[] = {
    {"decompress", xpress_decompress, METH_VARARGS, "decompress(data, size) -> bytes"},
    {"compress", xpress_compress, METH_VARARGS, "compress(data) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_xpress", NULL, -1, methods};

PyMODINIT_FUNC PyInit__xpress(void) { return PyModule_Create(&module); }
