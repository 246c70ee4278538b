/* The sha256 of scattered pieces of a buffer (a stream's payloads inside a mapped capture),
 * for many streams in one call: OpenSSL's SHA-256 fed each piece where it lies, with the
 * GIL released, so that the streams of a capture can be hashed on several threads. The C
 * twin of pieces.sha256_reference: the same digests, the same reports of what was read.
 * And the copy of many pieces of one buffer into another, for the same reasons. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

static int int64_vector(PyObject *obj, Py_buffer *b, const char *what) {
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *format = b->format ? b->format : "B";
    if (b->itemsize != 8 || b->ndim != 1 || strchr("ql", format[strlen(format) - 1]) == NULL) {
        PyBuffer_Release(b);
        b->obj = NULL;
        PyErr_Format(PyExc_TypeError, "%s: expected a vector of int64", what);
        return -1;
    }
    return 0;
}

static int report(PyObject *read, long long cost) {
    PyObject *r = PyObject_CallFunction(read, "L", cost);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* sha256(source, at, length, bounds, overhead, step, read) -> list of bytes: for each run
 * k of pieces, bounds[k] to bounds[k + 1] (bounds starts at 0 and ends at len(at)), the
 * digest of source[at[i]:at[i]+length[i]] over its pieces in order. read(cost) is called
 * each time the pieces hashed since the last call cost at least step (a piece costs its
 * length plus overhead), and once more at the end of each run for its rest, as the
 * reference calls it a run at a time. Every piece is checked to lie inside the source, and
 * the bounds to be in order, before any is read. */
static PyObject *sha256(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer src, at = {0}, len = {0}, bounds = {0};
    PyObject *at_obj, *len_obj, *bounds_obj, *read, *result = NULL, *digests = NULL;
    long long overhead, step;
    EVP_MD_CTX *ctx = NULL;
    if (!PyArg_ParseTuple(args, "y*OOOLLO", &src, &at_obj, &len_obj, &bounds_obj, &overhead,
                          &step, &read))
        return NULL;
    if (int64_vector(at_obj, &at, "at") < 0 || int64_vector(len_obj, &len, "length") < 0 ||
        int64_vector(bounds_obj, &bounds, "bounds") < 0)
        goto done;
    const int64_t *a = (const int64_t *)at.buf, *n = (const int64_t *)len.buf;
    const int64_t *b = (const int64_t *)bounds.buf;
    const Py_ssize_t count = at.len / 8, runs = bounds.len / 8 - 1;
    if (at.len != len.len) {
        PyErr_SetString(PyExc_ValueError, "at and length differ in size");
        goto done;
    }
    if (runs < 0 || b[0] != 0 || b[runs] != count) {
        PyErr_SetString(PyExc_ValueError, "bounds must run from 0 to the number of pieces");
        goto done;
    }
    for (Py_ssize_t k = 0; k < runs; k++) {
        if (b[k] > b[k + 1]) {
            PyErr_Format(PyExc_ValueError, "bounds %zd and %zd out of order", k, k + 1);
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (a[i] < 0 || n[i] < 0 || n[i] > src.len - a[i]) {
            PyErr_Format(PyExc_ValueError, "piece %zd (%lld bytes at %lld) outside the source",
                         i, (long long)n[i], (long long)a[i]);
            goto done;
        }
    }
    digests = PyList_New(runs);
    if (digests == NULL) goto done;
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *from = (const uint8_t *)src.buf;
    for (Py_ssize_t k = 0; k < runs; k++) {
        if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) goto openssl;
        long long cost = 0;
        int ok = 1;
        Py_ssize_t i = b[k];
        while (ok && i < b[k + 1]) {
            Py_BEGIN_ALLOW_THREADS
            for (; i < b[k + 1] && cost < step; i++) {
                if (!EVP_DigestUpdate(ctx, from + a[i], (size_t)n[i])) {
                    ok = 0;
                    break;
                }
                cost += n[i] + overhead;
            }
            Py_END_ALLOW_THREADS
            if (ok && cost >= step) {
                if (report(read, cost) < 0) goto done;
                cost = 0;
            }
        }
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int size = 0;
        if (!ok || !EVP_DigestFinal_ex(ctx, digest, &size)) goto openssl;
        if (cost && report(read, cost) < 0) goto done;
        PyObject *item = PyBytes_FromStringAndSize((const char *)digest, size);
        if (item == NULL) goto done;
        PyList_SET_ITEM(digests, k, item);
    }
    result = digests;
    digests = NULL;
    goto done;
openssl:
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to hash");
done:
    Py_XDECREF(digests);
    EVP_MD_CTX_free(ctx);
    PyBuffer_Release(&src);
    if (at.obj) PyBuffer_Release(&at);
    if (len.obj) PyBuffer_Release(&len);
    if (bounds.obj) PyBuffer_Release(&bounds);
    return result;
}

/* copy(target, to, source, at, length): target[to[i]:to[i]+length[i]] =
 * source[at[i]:at[i]+length[i]] for every piece, in order, with the GIL released; the C
 * twin of pieces.copy_reference. Every piece is checked to lie inside both buffers before
 * any byte is copied. */
static PyObject *copy(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer dst, src, to = {0}, at = {0}, len = {0};
    PyObject *to_obj, *at_obj, *len_obj, *result = NULL;
    if (!PyArg_ParseTuple(args, "w*Oy*OO", &dst, &to_obj, &src, &at_obj, &len_obj)) return NULL;
    if (int64_vector(to_obj, &to, "to") < 0 || int64_vector(at_obj, &at, "at") < 0 ||
        int64_vector(len_obj, &len, "length") < 0)
        goto done;
    const Py_ssize_t n = at.len / 8;
    if (to.len / 8 != n || len.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "to, at and length differ in length");
        goto done;
    }
    const int64_t *t = to.buf, *a = at.buf, *l = len.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (l[i] < 0 || a[i] < 0 || t[i] < 0 || a[i] > src.len - l[i] || t[i] > dst.len - l[i]) {
            PyErr_Format(PyExc_ValueError, "piece %zd (%lld bytes from %lld to %lld) is outside "
                         "its buffers", i, (long long)l[i], (long long)a[i], (long long)t[i]);
            goto done;
        }
    }
    uint8_t *out = dst.buf;
    const uint8_t *in = src.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) memcpy(out + t[i], in + a[i], (size_t)l[i]);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    if (to.obj) PyBuffer_Release(&to);
    if (at.obj) PyBuffer_Release(&at);
    if (len.obj) PyBuffer_Release(&len);
    return result;
}

static PyMethodDef methods[] = {
    {"sha256", sha256, METH_VARARGS,
     "The SHA-256 digest of each run of pieces source[at[i]:at[i]+length[i]], in order."},
    {"copy", copy, METH_VARARGS,
     "target[to[i]:to[i]+length[i]] = source[at[i]:at[i]+length[i]] for every piece."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pieces", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pieces(void) { return PyModule_Create(&module); }
