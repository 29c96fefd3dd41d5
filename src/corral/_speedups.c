/* corral._speedups: the compiled fast path of corral/_pure.py (RFC 6455 sections 5.2, 5.3).
 *
 * _pure.py is the source of truth. Every function here has the same arguments, results,
 * error codes and error texts as its pure twin; tests/protocol/test_accel.py checks that the
 * two agree on random input. corral/accel.py picks which one runs.
 *
 * No third-party dependencies; CPython C API only. Inputs are taken as Py_buffer, so bytes,
 * bytearray and memoryview all work without a copy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- masking (5.3) and headers (5.2): mask_copy and the header writer, shared with _hotpath.c */

#include "_frame.h"

/* Get a 4-byte mask out of a buffer-supporting object; ValueError if it is not 4 bytes.
 * On success the caller must PyBuffer_Release(view). */
static int
get_mask(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len != 4) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, offset=0) -> bytes\n\n"
"XOR data with the 4-byte mask, starting offset bytes into it (RFC 6455 5.3).");

static PyObject *
apply_mask(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "mask", "offset", NULL};
    Py_buffer data, mask;
    Py_ssize_t offset = 0;
    PyObject *mask_obj, *result;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O|n:apply_mask", kwlist, &data,
                                     &mask_obj, &offset))
        return NULL;
    if (get_mask(mask_obj, &mask) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL)
        /* (size_t) keeps two's complement, so a negative offset rotates like Python's & 3. */
        mask_copy((unsigned char *)PyBytes_AS_STRING(result), data.buf, (size_t)data.len,
                  mask.buf, (size_t)offset & 3);
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(apply_mask_in_place_doc,
"apply_mask_in_place(data, mask, offset=0) -> None\n\n"
"apply_mask that overwrites data, a writable buffer, with its result (RFC 6455 5.3).");

static PyObject *
apply_mask_in_place(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "mask", "offset", NULL};
    Py_buffer data, mask;
    Py_ssize_t offset = 0;
    PyObject *mask_obj;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "w*O|n:apply_mask_in_place", kwlist, &data,
                                     &mask_obj, &offset))
        return NULL;
    if (get_mask(mask_obj, &mask) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    mask_copy(data.buf, data.buf, (size_t)data.len, mask.buf, (size_t)offset & 3);
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/* ---- payload buffers ---------------------------------------------------------------------- */

/* A payload of known size, filled in place through writable views, then handed out as bytes.
 *
 * The bytes object is created uninitialised (PyBytes_FromStringAndSize(NULL, n), the C API's
 * way to build one) and is not seen by Python code before take(), so filling it in is
 * building it, not mutating an immutable object: a large message lands where the socket
 * wrote it and becomes the application's bytes without a copy. The buffer keeps its own
 * reference after take(), so a view still held points at live memory; it refuses new views,
 * and the caller must not write through old ones (the transport's view of the last read is
 * released right after buffer_updated returns). */
typedef struct {
    PyObject_HEAD
    PyObject *bytes;
    int taken;
} PayloadBuffer;

static PyObject *
payload_buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size;
    PayloadBuffer *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:PayloadBuffer", kwlist, &size))
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        return NULL;
    }
    self = (PayloadBuffer *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    /* Size 0 is the shared empty bytes: its zero-length views cannot write anything. */
    self->bytes = PyBytes_FromStringAndSize(NULL, size);
    if (self->bytes == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->taken = 0;
    return (PyObject *)self;
}

static void
payload_buffer_dealloc(PayloadBuffer *self)
{
    Py_XDECREF(self->bytes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
payload_buffer_check(PayloadBuffer *self)
{
    if (self->taken) {
        PyErr_SetString(PyExc_BufferError, "the payload was taken");
        return -1;
    }
    return 0;
}

static int
payload_buffer_getbuffer(PayloadBuffer *self, Py_buffer *view, int flags)
{
    if (payload_buffer_check(self) < 0) {
        view->obj = NULL;
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->bytes),
                             PyBytes_GET_SIZE(self->bytes), 0, flags);
}

static Py_ssize_t
payload_buffer_length(PayloadBuffer *self)
{
    return PyBytes_GET_SIZE(self->bytes);
}

PyDoc_STRVAR(payload_buffer_view_doc,
"view(start, stop) -> memoryview\n\nA writable view of bytes start to stop.");

static PyObject *
payload_buffer_view(PayloadBuffer *self, PyObject *args)
{
    Py_ssize_t start, stop;
    PyObject *whole, *part;

    if (!PyArg_ParseTuple(args, "nn:view", &start, &stop))
        return NULL;
    if (payload_buffer_check(self) < 0)
        return NULL;
    if (start < 0 || start > stop || stop > PyBytes_GET_SIZE(self->bytes)) {
        PyErr_SetString(PyExc_ValueError, "view out of range");
        return NULL;
    }
    whole = PyMemoryView_FromObject((PyObject *)self);
    if (whole == NULL)
        return NULL;
    part = PySequence_GetSlice(whole, start, stop);
    Py_DECREF(whole);
    return part;
}

PyDoc_STRVAR(payload_buffer_take_doc, "take() -> bytes\n\nThe payload as bytes; once only.");

static PyObject *
payload_buffer_take(PayloadBuffer *self, PyObject *Py_UNUSED(ignored))
{
    if (payload_buffer_check(self) < 0)
        return NULL;
    self->taken = 1;
    Py_INCREF(self->bytes);
    return self->bytes;
}

static PyMethodDef payload_buffer_methods[] = {
    {"view", (PyCFunction)payload_buffer_view, METH_VARARGS, payload_buffer_view_doc},
    {"take", (PyCFunction)payload_buffer_take, METH_NOARGS, payload_buffer_take_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods payload_buffer_as_sequence = {
    .sq_length = (lenfunc)payload_buffer_length,
};

static PyBufferProcs payload_buffer_as_buffer = {
    .bf_getbuffer = (getbufferproc)payload_buffer_getbuffer,
};

PyDoc_STRVAR(payload_buffer_doc,
"PayloadBuffer(size)\n\n"
"A payload of known size, filled in place (view), then handed out as bytes without a copy\n"
"(take). After take() no new view is given; do not write through the views still held.");

static PyTypeObject PayloadBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corral._speedups.PayloadBuffer",
    .tp_basicsize = sizeof(PayloadBuffer),
    .tp_dealloc = (destructor)payload_buffer_dealloc,
    .tp_as_sequence = &payload_buffer_as_sequence,
    .tp_as_buffer = &payload_buffer_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = payload_buffer_doc,
    .tp_methods = payload_buffer_methods,
    .tp_new = payload_buffer_new,
};

/* ---- serializing (5.2) -------------------------------------------------------------------- */

/* An int argument; one beyond long range becomes -1, which every caller rejects as out of
 * range with ValueError, as _pure.py does (rather than OverflowError). */
static int
small_int(PyObject *obj, long *out)
{
    int overflow;
    *out = PyLong_AsLongAndOverflow(obj, &overflow);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        *out = -1;
    return 0;
}

/* The first byte of a frame (5.2) from the opcode and RSV arguments, checked as
 * _pure._first_byte checks them: the byte, or -1 with ValueError set. */
static int
first_byte(PyObject *opcode_obj, PyObject *rsv_obj, int fin)
{
    long opcode, rsv = 0;

    if (small_int(opcode_obj, &opcode) < 0 || (rsv_obj && small_int(rsv_obj, &rsv) < 0))
        return -1;
    if (opcode < 0 || opcode > 0xF) {
        PyErr_SetString(PyExc_ValueError, "opcode must be in 0..15");
        return -1;
    }
    if (rsv & ~0x70) {
        PyErr_SetString(PyExc_ValueError, "rsv must only hold bits 0x70");
        return -1;
    }
    return (fin ? 0x80 : 0) | (int)rsv | (int)opcode;
}

PyDoc_STRVAR(build_frame_doc,
"build_frame(opcode, payload, fin=True, rsv=0, mask=None) -> bytes\n\n"
"Encode one frame (RFC 6455 5.2) in a single allocation; rsv holds the RSV bits in place\n"
"(0x70 mask); with a 4-byte mask the payload is masked (5.3).");

static PyObject *
build_frame(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"opcode", "payload", "fin", "rsv", "mask", NULL};
    int fin = 1, b0;
    PyObject *opcode_obj, *rsv_obj = NULL, *mask_obj = Py_None, *result = NULL;
    Py_buffer payload, mask;
    size_t n, header;
    unsigned char *out;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy*|pOO:build_frame", kwlist, &opcode_obj,
                                     &payload, &fin, &rsv_obj, &mask_obj))
        return NULL;
    mask.buf = NULL;
    b0 = first_byte(opcode_obj, rsv_obj, fin);
    if (b0 < 0)
        goto done;
    if (mask_obj != Py_None && get_mask(mask_obj, &mask) < 0) {
        mask.buf = NULL;
        goto done;
    }

    n = (size_t)payload.len;
    header = frame_header_size(n, mask.buf != NULL);
    if (n > (size_t)PY_SSIZE_T_MAX - header) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(header + n));
    if (result == NULL)
        goto done;
    out = (unsigned char *)PyBytes_AS_STRING(result);

    out = write_frame_header(out, (unsigned)b0, n, mask.buf != NULL);
    if (mask.buf != NULL) {
        memcpy(out, mask.buf, 4);
        mask_copy(out + 4, payload.buf, n, mask.buf, 0);
    } else if (n) {
        memcpy(out, payload.buf, n);
    }

done:
    if (mask.buf != NULL)
        PyBuffer_Release(&mask);
    PyBuffer_Release(&payload);
    return result;
}

PyDoc_STRVAR(frame_header_doc,
"frame_header(opcode, length, fin=True, rsv=0) -> bytes\n\n"
"The header of an unmasked frame whose length-byte payload is written apart from it\n"
"(RFC 6455 5.2): the same header build_frame writes.");

static PyObject *
frame_header(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"opcode", "length", "fin", "rsv", NULL};
    int fin = 1, overflow, b0;
    long long length;
    PyObject *opcode_obj, *length_obj, *rsv_obj = NULL;
    unsigned char header[14], *end;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|pO:frame_header", kwlist, &opcode_obj,
                                     &length_obj, &fin, &rsv_obj))
        return NULL;
    if (!PyLong_Check(length_obj)) {
        PyErr_Format(PyExc_TypeError, "length must be an int, not %.100s",
                     Py_TYPE(length_obj)->tp_name);
        return NULL;
    }
    b0 = first_byte(opcode_obj, rsv_obj, fin);
    if (b0 < 0)
        return NULL;
    length = PyLong_AsLongLongAndOverflow(length_obj, &overflow);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || length < 0) {
        PyErr_SetString(PyExc_ValueError, "length out of range"); /* 5.2: 63 bits at most */
        return NULL;
    }
    end = write_frame_header(header, (unsigned)b0, (size_t)length, 0);
    return PyBytes_FromStringAndSize((const char *)header, end - header);
}

/* ---- parsing (5.2) ------------------------------------------------------------------------ */

/* The reason a header rule gives (parse_frame_header's FH_ codes), as _pure.parse_frames words
 * it; a new reference, or NULL with an exception set. */
static PyObject *
rule_reason(int rule, const FrameHeader *h, int require_mask, long long max_frame)
{
    switch (rule) {
    case FH_RESERVED_OPCODE:
        return PyUnicode_FromFormat("reserved opcode 0x%x", h->opcode);
    case FH_CONTROL_TOO_LONG:
        return PyUnicode_FromString("control frame too long");
    case FH_CONTROL_FRAGMENTED:
        return PyUnicode_FromString("fragmented control frame");
    case FH_LENGTH_HIGH_BIT:
        return PyUnicode_FromString("64-bit payload length with the high bit set");
    case FH_UNMASKED:
    case FH_MASKED:
        return PyUnicode_FromString(require_mask ? "unmasked client frame"
                                                 : "masked server frame");
    default: /* FH_TOO_BIG */
        return PyUnicode_FromFormat("frame of %llu bytes, limit is %lld",
                                    (unsigned long long)h->length, max_frame);
    }
}

/* (opcode, fin, rsv, length, mask or None, header size) of a frame whose header was read. */
static PyObject *
header_tuple(const FrameHeader *h)
{
    PyObject *mask;

    if (h->key != NULL) {
        mask = PyBytes_FromStringAndSize((const char *)h->key, 4);
        if (mask == NULL)
            return NULL;
    } else {
        mask = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(iOiKNn)", (int)h->opcode, (h->b0 & 0x80) ? Py_True : Py_False,
                         (int)(h->b0 & 0x70), (unsigned long long)h->length, mask,
                         (Py_ssize_t)h->size);
}

PyDoc_STRVAR(parse_frames_doc,
"parse_frames(buf, pos, require_mask, max_frame_size, /)\n"
"    -> (frames, new_pos, code, reason, header)\n\n"
"Parse every complete frame in buf from pos (RFC 6455 5.2). frames: list of\n"
"(opcode, fin, rsv, unmasked payload). code: 0, or 1002/1009 for the first bad frame,\n"
"which new_pos then points at. header: None, or the (opcode, fin, rsv, length, mask,\n"
"header_size) of the frame at new_pos when its header is whole but its payload is not,\n"
"or when it is too big (1009). max_frame_size < 0: no limit.");

/* Called once per read with four positional arguments: METH_FASTCALL and these few checks
 * cost far less than the generic argument parser. */
static PyObject *
parse_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos;
    int require_mask, overflow, rule = FH_INCOMPLETE, code = 0;
    PyObject *frames, *reason = NULL, *header = NULL, *result = NULL;
    long long max_frame_size;
    const unsigned char *buf;
    size_t end, p;
    FrameHeader h;

    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "parse_frames() takes 4 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    pos = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    require_mask = PyObject_IsTrue(args[2]);
    if (require_mask < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    /* Any int is accepted; one beyond long long range cannot be reached by a 63-bit length,
     * so it counts as no limit, as does a negative one. */
    max_frame_size = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (max_frame_size == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (overflow || max_frame_size < 0)
        max_frame_size = -1;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return NULL;
    }
    frames = PyList_New(0);
    if (frames == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }

    buf = view.buf;
    end = (size_t)view.len;
    p = (size_t)pos;
    for (;;) {
        PyObject *payload, *item;

        rule = parse_frame_header(buf + p, end - p, require_mask, max_frame_size, &h);
        if (rule != FH_OK)
            break;
        if ((uint64_t)(end - p - h.size) < h.length)
            break;
        /* Complete: copy the payload out, unmasking while copying (5.3). */
        payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h.length);
        if (payload == NULL)
            goto done;
        if (h.key != NULL)
            mask_copy((unsigned char *)PyBytes_AS_STRING(payload), buf + p + h.size,
                      (size_t)h.length, h.key, 0);
        else if (h.length)
            memcpy(PyBytes_AS_STRING(payload), buf + p + h.size, (size_t)h.length);
        item = PyTuple_New(4);
        if (item == NULL) {
            Py_DECREF(payload);
            goto done;
        }
        /* 0..15, 0/1 and 0..0x70 are cached small ints: these calls cannot fail. */
        PyTuple_SET_ITEM(item, 0, PyLong_FromLong((long)h.opcode));
        PyTuple_SET_ITEM(item, 1, PyBool_FromLong(h.b0 & 0x80));
        PyTuple_SET_ITEM(item, 2, PyLong_FromLong((long)(h.b0 & 0x70)));
        PyTuple_SET_ITEM(item, 3, payload);
        if (PyList_Append(frames, item) < 0) {
            Py_DECREF(item);
            goto done;
        }
        Py_DECREF(item);
        p += h.size + (size_t)h.length;
    }
    if (rule == FH_INCOMPLETE || rule == FH_OK) { /* FH_OK: the payload is incomplete */
        reason = PyUnicode_FromStringAndSize("", 0);
    } else {
        code = rule == FH_TOO_BIG ? 1009 : 1002;
        reason = rule_reason(rule, &h, require_mask, max_frame_size);
    }
    if (reason == NULL)
        goto done;
    /* The frame at p: its header is whole and its payload is not here, or it is too big. */
    if (rule == FH_OK || rule == FH_TOO_BIG)
        header = header_tuple(&h);
    else
        header = Py_NewRef(Py_None);
    if (header == NULL)
        goto done;
    {
        /* Built by hand: this runs once per read, and Py_BuildValue parses its format. */
        PyObject *pos_obj = PyLong_FromSsize_t((Py_ssize_t)p);
        PyObject *code_obj = PyLong_FromLong(code);
        if (pos_obj != NULL && code_obj != NULL)
            result = PyTuple_Pack(5, frames, pos_obj, code_obj, reason, header);
        Py_XDECREF(pos_obj);
        Py_XDECREF(code_obj);
    }

done:
    PyBuffer_Release(&view);
    Py_XDECREF(header);
    Py_XDECREF(reason);
    Py_DECREF(frames);
    return result;
}

/* ---- module ------------------------------------------------------------------------------- */

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_VARARGS | METH_KEYWORDS,
     apply_mask_doc},
    {"apply_mask_in_place", (PyCFunction)(void (*)(void))apply_mask_in_place,
     METH_VARARGS | METH_KEYWORDS, apply_mask_in_place_doc},
    {"build_frame", (PyCFunction)(void (*)(void))build_frame, METH_VARARGS | METH_KEYWORDS,
     build_frame_doc},
    {"frame_header", (PyCFunction)(void (*)(void))frame_header, METH_VARARGS | METH_KEYWORDS,
     frame_header_doc},
    {"parse_frames", (PyCFunction)(void (*)(void))parse_frames, METH_FASTCALL, parse_frames_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
    if (PyType_Ready(&PayloadBufferType) < 0)
        return -1;
    Py_INCREF(&PayloadBufferType);
    if (PyModule_AddObject(module, "PayloadBuffer", (PyObject *)&PayloadBufferType) < 0) {
        Py_DECREF(&PayloadBufferType);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "corral._speedups",
    .m_doc = "Compiled twins of corral._pure: frame masking, building and parsing, payload "
             "buffers.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
