/* corral._hotpath: the compiled hot path of one connection (docs/architecture.md).
 *
 * Two small base types. StreamCore is the base of corral.transport.StreamProtocol: its
 * get_buffer and buffer_updated take a read of whole, plain messages (single-frame text or
 * binary, no extension, nothing in progress) from the socket to the handler's on_message and
 * on to the corked write in C. HandleCore is the base of corral.websocket.WebSocket: its send
 * queues a message without a Python frame. Everything else (control frames,
 * fragments, compression, errors, partial frames, a busy or paused handler, closing) goes to
 * the Python session and core, unchanged.
 *
 * The Python session (corral.session.Session) is the specification; corral._pure_hotpath
 * holds the pure twins of these types, which only delegate to it. What this file does for a
 * read, the session would do the same way: the core parses a whole read before the session
 * dispatches its events, so the fast path too builds every message of the read first and
 * leaves any read whose frames it does not take whole to the session, untouched.
 * tests/server/test_hot_path.py drives both with the same byte streams and handler answers
 * and compares what they write and decide.
 *
 * The state it reads lives in the session's, core's, reader's and deadlines' __slots__,
 * reached through the slot offsets of their member descriptors (resolved once per class,
 * checked when a connection binds), so a state test costs a load, not an attribute lookup.
 * The names are in the tables below; renaming one of those slots fails the bind loudly.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_frame.h"

/* ---- slots of the Python objects the hot path reads ------------------------------------ */

enum { S_CONN, S_WS, S_HANDLER, S_DEADLINES, S_WIRE, S_LOOP, S_BUSY, S_PAUSED, S_BACKLOG,
       S_EOF, S_CLOSING_KIND, S_CORKED, S_WRITE_PAUSED, S_HOLD_FOR_APP, S_COUNTERS, S_COUNT };
static const char *const session_slots[S_COUNT] = {
    "conn", "ws", "handler", "deadlines", "wire", "_loop", "_busy", "_paused", "_backlog",
    "_eof", "_closing_kind", "_corked", "_write_paused", "_hold_for_app", "counters",
};

enum { C_STATE, C_CLOSE_RECEIVED, C_CLOSE_SENT, C_FAILURE, C_PLAIN, C_MSG_OPCODE, C_READER,
       C_MAX_MESSAGE, C_OUT, C_OWED_CLOSE, C_OUT_SPLIT, C_EXTENSIONS, C_OUT_OPCODE, C_SIDE,
       C_PAYLOAD_PENDING, C_COUNT };
static const char *const conn_slots[C_COUNT] = {
    "state", "close_received", "close_sent", "failure", "_plain", "_msg_opcode", "_reader",
    "max_message_size", "_out", "_owed_close", "out_split", "_extensions", "_out_opcode",
    "side", "payload_pending",
};

enum { R_IDLE, R_REQUIRE_MASK, R_MAX_FRAME, R_COUNT };
static const char *const reader_slots[R_COUNT] = {"idle", "require_mask", "max_frame_size"};

enum { D_LAST_RECV, D_COUNT };
static const char *const deadline_slots[D_COUNT] = {"last_recv"};

typedef struct {
    PyTypeObject *type; /* strong reference once resolved */
    Py_ssize_t offset[16];
} SlotMap;

static SlotMap session_map, conn_map, reader_map, deadline_map;

#define SLOT(obj, map, i) (*(PyObject **)((char *)(obj) + (map).offset[(i)]))

/* Resolve the offsets of `names` in `type` (cached per class). */
static int
resolve(SlotMap *map, PyTypeObject *type, const char *const *names, int count)
{
    Py_ssize_t offset[16];

    if (map->type == type)
        return 0;
    for (int i = 0; i < count; i++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, names[i]);
        PyMemberDef *member;

        if (descr == NULL)
            return -1;
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot: the hot path needs it as one",
                         type->tp_name, names[i]);
            Py_DECREF(descr);
            return -1;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name,
                         names[i]);
            Py_DECREF(descr);
            return -1;
        }
        offset[i] = member->offset;
        Py_DECREF(descr);
    }
    memcpy(map->offset, offset, sizeof(Py_ssize_t) * (size_t)count);
    Py_XSETREF(map->type, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

/* A slot is unset only if something is badly wrong (they are all set in __init__). */
static int
slots_set(PyObject *obj, const SlotMap *map, int count)
{
    for (int i = 0; i < count; i++)
        if (*(PyObject **)((char *)obj + map->offset[i]) == NULL) {
            PyErr_Format(PyExc_AttributeError, "%s has an unset slot",
                         Py_TYPE(obj)->tp_name);
            return -1;
        }
    return 0;
}

static void
slot_set(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject **where = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*where, Py_NewRef(value));
}

/* ---- constants given by corral.session (configure) ------------------------------------- */

static PyObject *state_open, *state_closed, *kind_crash, *message_type, *side_server;
static Py_ssize_t split_payload = 8192;

static PyObject *str_read_target, *str_payload_received, *str_data_received, *str_crash,
    *str_handled, *str_defer, *str_flush, *str_answers_pending, *str_answers_done, *str_send, *str_on_message, *str_time,
    *str_receive_data, *str_handle_received, *str_write, *str_writelines, *str_is_closing,
    *str_join, *str_writing_paused, *str_reading_paused, *empty_bytes;

PyDoc_STRVAR(configure_doc,
"configure(open, closed, crash, message, server, split_payload, /)\n\n"
"The session's constants: State.OPEN, State.CLOSED, CloseKind.CRASH, the Message event\n"
"type, Side.SERVER and SPLIT_PAYLOAD.");

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "configure() takes 6 positional arguments");
        return NULL;
    }
    split_payload = PyNumber_AsSsize_t(args[5], PyExc_OverflowError);
    if (split_payload == -1 && PyErr_Occurred())
        return NULL;
    Py_XSETREF(state_open, Py_NewRef(args[0]));
    Py_XSETREF(state_closed, Py_NewRef(args[1]));
    Py_XSETREF(kind_crash, Py_NewRef(args[2]));
    Py_XSETREF(message_type, Py_NewRef(args[3]));
    Py_XSETREF(side_server, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

/* ---- helpers ----------------------------------------------------------------------------- */

/* None -> -1 (no limit); an int -> its value (huge or negative: no limit, as parse_frames). */
static int
limit_of(PyObject *value, long long *out)
{
    int overflow;

    if (value == Py_None) {
        *out = -1;
        return 0;
    }
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (overflow || *out < 0)
        *out = -1;
    return 0;
}

static int
is_minus_one(PyObject *value)
{
    return PyLong_CheckExact(value) && PyLong_AsLong(value) == -1;
}

/* ---- Counters: what a server's connections carried (corral.server.stats) ---------------- */

/* Plain integers, so that counting a message on the hot path is an increment, not a Python
 * int: the fast path adds to them in C, the session's Python paths through the members. */
typedef struct {
    PyObject_HEAD
    unsigned long long messages_received, messages_sent, bytes_received, bytes_sent,
        dropped_messages, backpressure_closes;
} Counters;

static PyMemberDef Counters_members[] = {
    {"messages_received", T_ULONGLONG, offsetof(Counters, messages_received), 0,
     PyDoc_STR("Data messages received (a fragmented one once, when whole).")},
    {"messages_sent", T_ULONGLONG, offsetof(Counters, messages_sent), 0,
     PyDoc_STR("Data messages queued for sending (a fragmented one once, at its end).")},
    {"bytes_received", T_ULONGLONG, offsetof(Counters, bytes_received), 0,
     PyDoc_STR("Bytes read from the wire after the handshake (frames as sent: compressed).")},
    {"bytes_sent", T_ULONGLONG, offsetof(Counters, bytes_sent), 0,
     PyDoc_STR("Bytes handed to the wire after the handshake.")},
    {"dropped_messages", T_ULONGLONG, offsetof(Counters, dropped_messages), 0,
     PyDoc_STR("Data messages not sent because of max_backpressure.")},
    {"backpressure_closes", T_ULONGLONG, offsetof(Counters, backpressure_closes), 0,
     PyDoc_STR("Connections closed (1013) by backpressure_policy 'close'.")},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corral._hotpath.Counters",
    .tp_doc = PyDoc_STR("Counters(): messages, bytes and drops of a server's connections."),
    .tp_basicsize = sizeof(Counters),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_members = Counters_members,
};

/* The session's counters when they are the C type (they always are in compiled mode). */
static Counters *
counters_of(PyObject *session)
{
    PyObject *counters = SLOT(session, session_map, S_COUNTERS);
    return Py_IS_TYPE(counters, &CountersType) ? (Counters *)counters : NULL;
}

/* Session._flush for the usual case (open, no close owed, the peer not half-closed): write
 * what is queued in one call. Anything else is the session's own _flush. */
static int
flush(PyObject *session)
{
    PyObject *conn = SLOT(session, session_map, S_CONN);
    PyObject *wire = SLOT(session, session_map, S_WIRE);
    PyObject *out, *result, *closing;
    int split;

    if (wire == Py_None)
        return 0;
    if (SLOT(conn, conn_map, C_STATE) != state_open
        || SLOT(conn, conn_map, C_OWED_CLOSE) != Py_None
        || SLOT(session, session_map, S_EOF) != Py_False) {
        result = PyObject_CallMethodNoArgs(session, str_flush);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
        return 0;
    }
    out = SLOT(conn, conn_map, C_OUT);
    if (!PyList_CheckExact(out) || PyList_GET_SIZE(out) == 0)
        return 0;
    /* Connection.data_to_send: hand the list over, start a new one. */
    {
        PyObject *fresh = PyList_New(0);
        if (fresh == NULL)
            return -1;
        split = SLOT(conn, conn_map, C_OUT_SPLIT) == Py_True;
        Py_INCREF(out);
        slot_set(conn, conn_map.offset[C_OUT], fresh);
        Py_DECREF(fresh);
        slot_set(conn, conn_map.offset[C_OUT_SPLIT], Py_False);
    }
    closing = PyObject_CallMethodNoArgs(wire, str_is_closing);
    if (closing == NULL) {
        Py_DECREF(out);
        return -1;
    }
    if (closing == Py_True) {
        Py_DECREF(closing);
        Py_DECREF(out);
        return 0;
    }
    Py_DECREF(closing);
    {
        Counters *counters = counters_of(session);
        if (counters != NULL)
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(out); i++) {
                PyObject *item = PyList_GET_ITEM(out, i);
                Py_ssize_t size = PyBytes_CheckExact(item) ? PyBytes_GET_SIZE(item)
                                                           : PyObject_Length(item);
                if (size < 0) {
                    Py_DECREF(out);
                    return -1;
                }
                counters->bytes_sent += (unsigned long long)size;
            }
    }
    if (PyList_GET_SIZE(out) == 1) {
        result = PyObject_CallMethodOneArg(wire, str_write, PyList_GET_ITEM(out, 0));
    } else if (split) {
        result = PyObject_CallMethodOneArg(wire, str_writelines, out);
    } else {
        PyObject *joined = PyObject_CallMethodOneArg(empty_bytes, str_join, out);
        result = joined ? PyObject_CallMethodOneArg(wire, str_write, joined) : NULL;
        Py_XDECREF(joined);
    }
    Py_DECREF(out);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* ---- StreamCore: the base of corral.transport.StreamProtocol ---------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *receiver; /* the session, as corral.transport.Receiver */
    PyObject *buffer;   /* the thread's shared read buffer (a writable memoryview) */
    PyObject *session;  /* set by bind(): the fast path is on */
    int direct;         /* the last get_buffer gave the receiver's own buffer */
} StreamCore;

static int
StreamCore_init(StreamCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *receiver, *buffer;
    static char *kwlist[] = {"receiver", "buffer", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:StreamCore", kwlist, &receiver, &buffer))
        return -1;
    if (!PyMemoryView_Check(buffer)) {
        PyErr_SetString(PyExc_TypeError, "buffer must be a memoryview");
        return -1;
    }
    Py_XSETREF(self->receiver, Py_NewRef(receiver));
    Py_XSETREF(self->buffer, Py_NewRef(buffer));
    Py_CLEAR(self->session);
    self->direct = 0;
    return 0;
}

static int
StreamCore_traverse(StreamCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->receiver);
    Py_VISIT(self->buffer);
    Py_VISIT(self->session);
    return 0;
}

static int
StreamCore_clear(StreamCore *self)
{
    Py_CLEAR(self->receiver);
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->session);
    return 0;
}

static void
StreamCore_dealloc(StreamCore *self)
{
    PyObject_GC_UnTrack(self);
    StreamCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(bind_doc,
"bind(session, /)\n\n"
"Take reads of whole plain messages to this session's handler in C from now on.");

/* The slot maps, (re)resolved for this session's classes: the offsets are cached for one
 * class each, so a connection of another class (a subclass with slots of its own) resolves
 * them again before its slots are read. Every entry to the fast path goes through here. */
static int
maps_for(PyObject *session, int check_set)
{
    PyObject *conn, *reader;

    if (resolve(&session_map, Py_TYPE(session), session_slots, S_COUNT) < 0
        || (check_set && slots_set(session, &session_map, S_COUNT) < 0))
        return -1;
    conn = SLOT(session, session_map, S_CONN);
    if (resolve(&conn_map, Py_TYPE(conn), conn_slots, C_COUNT) < 0
        || (check_set && slots_set(conn, &conn_map, C_COUNT) < 0))
        return -1;
    reader = SLOT(conn, conn_map, C_READER);
    if (resolve(&reader_map, Py_TYPE(reader), reader_slots, R_COUNT) < 0
        || (check_set && slots_set(reader, &reader_map, R_COUNT) < 0))
        return -1;
    return 0;
}

static PyObject *
StreamCore_bind(StreamCore *self, PyObject *session)
{
    if (state_open == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "corral._hotpath.configure() was not called");
        return NULL;
    }
    if (maps_for(session, 1) < 0)
        return NULL;
    Py_XSETREF(self->session, Py_NewRef(session));
    Py_RETURN_NONE;
}

static PyObject *
shared_buffer(StreamCore *self)
{
    self->direct = 0;
    return Py_NewRef(self->buffer);
}

static PyObject *
StreamCore_get_buffer(StreamCore *self, PyObject *Py_UNUSED(sizehint))
{
    PyObject *target;

    if (self->session != NULL) {
        PyObject *conn;
        if (maps_for(self->session, 0) < 0)
            return NULL;
        conn = SLOT(self->session, session_map, S_CONN);
        /* Connection.payload_pending is False: payload_buffer() would say None. */
        if (SLOT(conn, conn_map, C_PAYLOAD_PENDING) == Py_False)
            return shared_buffer(self);
    }
    target = PyObject_CallMethodNoArgs(self->receiver, str_read_target);
    if (target == NULL || target != Py_None) {
        self->direct = target != NULL;
        return target;
    }
    Py_DECREF(target);
    return shared_buffer(self);
}

/* The messages of one read, built before any is dispatched. */
typedef struct {
    PyObject *small[32];
    PyObject **items;
    Py_ssize_t count, capacity;
} Batch;

static void
batch_init(Batch *b)
{
    b->items = b->small;
    b->count = 0;
    b->capacity = 32;
}

static int
batch_add(Batch *b, PyObject *item)
{
    if (b->count == b->capacity) {
        Py_ssize_t capacity = b->capacity * 2;
        PyObject **items = PyMem_Malloc(sizeof(PyObject *) * (size_t)capacity);
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(items, b->items, sizeof(PyObject *) * (size_t)b->count);
        if (b->items != b->small)
            PyMem_Free(b->items);
        b->items = items;
        b->capacity = capacity;
    }
    b->items[b->count++] = item;
    return 0;
}

static void
batch_free(Batch *b)
{
    for (Py_ssize_t i = 0; i < b->count; i++)
        Py_XDECREF(b->items[i]);
    if (b->items != b->small)
        PyMem_Free(b->items);
}

/* The payload of one masked or unmasked frame as the message: bytes, or str for text (None,
 * no error set, when the text is not valid UTF-8: the core will fail the connection). */
static PyObject *
message_of(const unsigned char *src, size_t length, const unsigned char *key, int text)
{
    unsigned char small[512], *plain;
    PyObject *result;

    if (!text) {
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
        if (bytes == NULL)
            return NULL;
        if (key != NULL)
            mask_copy((unsigned char *)PyBytes_AS_STRING(bytes), src, length, key, 0);
        else if (length)
            memcpy(PyBytes_AS_STRING(bytes), src, length);
        return bytes;
    }
    /* Text is decoded from the unmasked bytes; only the str is kept (no bytes object). */
    plain = (unsigned char *)src;
    if (key != NULL) {
        plain = length <= sizeof(small) ? small : PyMem_Malloc(length);
        if (plain == NULL)
            return PyErr_NoMemory();
        mask_copy(plain, src, length, key, 0);
    }
    result = PyUnicode_DecodeUTF8((const char *)plain, (Py_ssize_t)length, "strict");
    if (plain != src && plain != small)
        PyMem_Free(plain);
    if (result == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    return result;
}

/* Scan a read: the messages of its whole plain frames, and the size of what follows them,
 * which must be an incomplete header. 1: taken, 0: the session's (nothing built), -1: error. */
static int
scan(PyObject *conn, const unsigned char *buf, size_t end, Batch *batch, size_t *used)
{
    PyObject *reader = SLOT(conn, conn_map, C_READER);
    int require_mask = SLOT(reader, reader_map, R_REQUIRE_MASK) == Py_True;
    long long max_frame, max_message;
    size_t p = 0;

    if (limit_of(SLOT(reader, reader_map, R_MAX_FRAME), &max_frame) < 0
        || limit_of(SLOT(conn, conn_map, C_MAX_MESSAGE), &max_message) < 0)
        return -1;
    for (;;) {
        FrameHeader h;
        int rule = parse_frame_header(buf + p, end - p, require_mask, max_frame, &h);
        PyObject *message;

        if (rule == FH_INCOMPLETE)
            break; /* an incomplete header: the reader keeps it, no event can come of it */
        /* Whole single-frame text or binary messages only, within both limits, all of the
         * payload here: FIN, no RSV bit, no rule broken. Anything else is the session's. */
        if (rule != FH_OK || (h.b0 & 0xF0) != 0x80 || (h.opcode != 1 && h.opcode != 2)
            || (max_message >= 0 && h.length > (uint64_t)max_message)
            || (uint64_t)(end - p - h.size) < h.length)
            return 0;
        message = message_of(buf + p + h.size, (size_t)h.length, h.key, h.opcode == 1);
        if (message == NULL)
            return -1;
        if (message == Py_None) {
            Py_DECREF(message);
            return 0;
        }
        if (batch_add(batch, message) < 0) {
            Py_DECREF(message);
            return -1;
        }
        p += h.size + (size_t)h.length;
    }
    *used = p;
    return batch->count > 0;
}

/* Session.data_received for a read the fast path takes: 1 handled, 0 the session's, -1 error. */
static int
fast_read(StreamCore *self, Py_ssize_t nbytes)
{
    PyObject *session = self->session;
    PyObject *conn, *reader, *deadlines, *on_message, *ws, *now;
    Counters *counters;
    Py_buffer view;
    Batch batch;
    size_t used = 0;
    Py_ssize_t i;
    int taken;

    if (maps_for(session, 0) < 0)
        return -1;
    conn = SLOT(session, session_map, S_CONN);
    reader = SLOT(conn, conn_map, C_READER);
    /* What Session._handle_received and Connection.receive_data would decide at once. */
    if (SLOT(session, session_map, S_BUSY) != Py_False
        || SLOT(session, session_map, S_PAUSED) != Py_False
        || SLOT(session, session_map, S_BACKLOG) != Py_None
        || SLOT(session, session_map, S_CLOSING_KIND) == kind_crash
        || SLOT(conn, conn_map, C_STATE) == state_closed
        || SLOT(conn, conn_map, C_CLOSE_RECEIVED) != Py_None
        || SLOT(conn, conn_map, C_FAILURE) != Py_None
        || SLOT(conn, conn_map, C_PLAIN) != Py_True
        || !is_minus_one(SLOT(conn, conn_map, C_MSG_OPCODE))
        || SLOT(reader, reader_map, R_IDLE) != Py_True)
        return 0;
    if (PyObject_GetBuffer(self->buffer, &view, PyBUF_SIMPLE) < 0)
        return -1;
    if (nbytes < 0 || nbytes > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer_updated: more bytes than the buffer holds");
        return -1;
    }
    batch_init(&batch);
    taken = scan(conn, view.buf, (size_t)nbytes, &batch, &used);
    PyBuffer_Release(&view);
    if (taken <= 0) {
        batch_free(&batch);
        return taken;
    }

    /* Session.data_received: stamp the read for the deadlines, cork, handle, uncork, flush. */
    deadlines = SLOT(session, session_map, S_DEADLINES);
    if (deadlines != Py_None) {
        if (resolve(&deadline_map, Py_TYPE(deadlines), deadline_slots, D_COUNT) < 0)
            goto error;
        now = PyObject_CallMethodNoArgs(SLOT(session, session_map, S_LOOP), str_time);
        if (now == NULL)
            goto error;
        slot_set(deadlines, deadline_map.offset[D_LAST_RECV], now);
        Py_DECREF(now);
    }
    counters = counters_of(session);
    if (counters != NULL)
        counters->bytes_received += (unsigned long long)nbytes;
    slot_set(session, session_map.offset[S_CORKED], Py_True);
    on_message = PyObject_GetAttr(SLOT(session, session_map, S_HANDLER), str_on_message);
    if (on_message == NULL)
        goto uncork_error;
    ws = SLOT(session, session_map, S_WS);
    Py_INCREF(ws);
    for (i = 0; i < batch.count; i++) {
        PyObject *call_args[2] = {ws, batch.items[i]};
        PyObject *result;

        if (counters != NULL)
            counters->messages_received++;
        /* A handler that raised is not called again (Session._dispatch). */
        if (SLOT(session, session_map, S_CLOSING_KIND) != kind_crash) {
            result = PyObject_Vectorcall(on_message, call_args, 2, NULL);
            if (result == NULL) {
                PyObject *exc, *tb, *type;
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    goto dispatch_error;
                PyErr_Fetch(&type, &exc, &tb);
                PyErr_NormalizeException(&type, &exc, &tb);
                if (tb != NULL)
                    PyException_SetTraceback(exc, tb);
                Py_XDECREF(type);
                Py_XDECREF(tb);
                result = PyObject_CallMethodOneArg(session, str_crash, exc);
                Py_XDECREF(exc);
                if (result == NULL)
                    goto dispatch_error;
                Py_DECREF(result);
            } else if (result != Py_None) {
                PyObject *done = PyObject_CallMethodOneArg(session, str_handled, result);
                Py_DECREF(result);
                if (done == NULL)
                    goto dispatch_error;
                Py_DECREF(done);
            } else {
                Py_DECREF(result);
            }
        }
        Py_CLEAR(batch.items[i]);
        if (SLOT(session, session_map, S_BUSY) != Py_False
            || SLOT(session, session_map, S_PAUSED) != Py_False) {
            /* The rest waits in the backlog, as Message events (Session._defer). */
            PyObject *rest = PyList_New(0), *done;
            Py_ssize_t j;
            if (rest == NULL)
                goto dispatch_error;
            for (j = i + 1; j < batch.count; j++) {
                PyObject *event = PyObject_CallOneArg(message_type, batch.items[j]);
                if (event == NULL || PyList_Append(rest, event) < 0) {
                    Py_XDECREF(event);
                    Py_DECREF(rest);
                    goto dispatch_error;
                }
                Py_DECREF(event);
            }
            done = PyObject_CallMethodOneArg(session, str_defer, rest);
            Py_DECREF(rest);
            if (done == NULL)
                goto dispatch_error;
            Py_DECREF(done);
            break;
        }
    }
    Py_DECREF(ws);
    Py_DECREF(on_message);
    batch_free(&batch);
    if ((Py_ssize_t)used < nbytes) {
        /* The incomplete header that ends the read goes to the core's reader. */
        PyObject *tail = PySequence_GetSlice(self->buffer, (Py_ssize_t)used, nbytes);
        PyObject *events = tail ? PyObject_CallMethodOneArg(conn, str_receive_data, tail) : NULL;
        PyObject *done;
        Py_XDECREF(tail);
        if (events == NULL)
            goto uncork_error;
        done = PyObject_CallMethodOneArg(session, str_handle_received, events);
        Py_DECREF(events);
        if (done == NULL)
            goto uncork_error;
        Py_DECREF(done);
    }
    slot_set(session, session_map.offset[S_CORKED], Py_False);
    return flush(session) < 0 ? -1 : 1;

dispatch_error:
    Py_DECREF(ws);
    Py_DECREF(on_message);
uncork_error:
    slot_set(session, session_map.offset[S_CORKED], Py_False);
error:
    batch_free(&batch);
    return -1;
}

static PyObject *
StreamCore_buffer_updated(StreamCore *self, PyObject *arg)
{
    Py_ssize_t nbytes;
    PyObject *slice, *result;

    if (self->direct)
        return PyObject_CallMethodOneArg(self->receiver, str_payload_received, arg);
    nbytes = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (nbytes == -1 && PyErr_Occurred())
        return NULL;
    if (self->session != NULL) {
        int taken = fast_read(self, nbytes);
        if (taken < 0)
            return NULL;
        if (taken)
            Py_RETURN_NONE;
    }
    slice = PySequence_GetSlice(self->buffer, 0, nbytes);
    if (slice == NULL)
        return NULL;
    result = PyObject_CallMethodOneArg(self->receiver, str_data_received, slice);
    Py_DECREF(slice);
    return result;
}

static PyMethodDef StreamCore_methods[] = {
    {"bind", (PyCFunction)StreamCore_bind, METH_O, bind_doc},
    {"get_buffer", (PyCFunction)StreamCore_get_buffer, METH_O, NULL},
    {"buffer_updated", (PyCFunction)StreamCore_buffer_updated, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef StreamCore_members[] = {
    {"_receiver", T_OBJECT_EX, offsetof(StreamCore, receiver), READONLY, NULL},
    {"_buffer", T_OBJECT_EX, offsetof(StreamCore, buffer), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject StreamCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corral._hotpath.StreamCore",
    .tp_doc = PyDoc_STR("StreamCore(receiver, buffer): the C half of StreamProtocol."),
    .tp_basicsize = sizeof(StreamCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)StreamCore_init,
    .tp_dealloc = (destructor)StreamCore_dealloc,
    .tp_traverse = (traverseproc)StreamCore_traverse,
    .tp_clear = (inquiry)StreamCore_clear,
    .tp_methods = StreamCore_methods,
    .tp_members = StreamCore_members,
};

/* ---- HandleCore: the base of corral.websocket.WebSocket ---------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *session;
} HandleCore;

static int
HandleCore_traverse(HandleCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session);
    return 0;
}

static int
HandleCore_clear(HandleCore *self)
{
    Py_CLEAR(self->session);
    return 0;
}

static void
HandleCore_dealloc(HandleCore *self)
{
    PyObject_GC_UnTrack(self);
    HandleCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The frame of a message from the server (unmasked, 5.2), queued as Connection.send_message
 * would: a small one built whole, a large one (split_payload bytes or more) as its header and
 * its payload apart, to be written together (writelines). 1 queued, 0 the session's, -1 error. */
static int
queue_message(PyObject *conn, PyObject *message)
{
    const char *data;
    Py_ssize_t length;
    unsigned opcode;
    PyObject *out = SLOT(conn, conn_map, C_OUT), *frame, *payload;
    unsigned char header[14], *p;
    int queued;

    if (PyUnicode_CheckExact(message)) {
        data = PyUnicode_AsUTF8AndSize(message, &length);
        if (data == NULL)
            return -1; /* lone surrogates: str.encode() raises the same error */
        opcode = 1;
    } else if (PyBytes_CheckExact(message)) {
        data = PyBytes_AS_STRING(message);
        length = PyBytes_GET_SIZE(message);
        opcode = 2;
    } else {
        return 0;
    }
    if (length < split_payload) {
        frame = PyBytes_FromStringAndSize(
            NULL, (Py_ssize_t)frame_header_size((size_t)length, 0) + length);
        if (frame == NULL)
            return -1;
        p = write_frame_header((unsigned char *)PyBytes_AS_STRING(frame), 0x80 | opcode,
                               (size_t)length, 0);
        memcpy(p, data, (size_t)length);
        queued = PyList_Append(out, frame);
        Py_DECREF(frame);
        return queued < 0 ? -1 : 1;
    }
    /* Connection._queue: the header, then the payload itself (a str's UTF-8 as bytes). */
    p = write_frame_header(header, 0x80 | opcode, (size_t)length, 0);
    frame = PyBytes_FromStringAndSize((const char *)header, p - header);
    if (frame == NULL)
        return -1;
    payload = opcode == 2 ? Py_NewRef(message) : PyBytes_FromStringAndSize(data, length);
    queued = payload == NULL || PyList_Append(out, frame) < 0 ? -1 : PyList_Append(out, payload);
    Py_DECREF(frame);
    Py_XDECREF(payload);
    if (queued < 0)
        return -1;
    slot_set(conn, conn_map.offset[C_OUT_SPLIT], Py_True);
    return 1;
}

static PyObject *
HandleCore_send(HandleCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *session = self->session;
    PyObject *call[3];
    Py_ssize_t nkw;

    if (session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "WebSocket without a session");
        return NULL;
    }
    /* Session.send, when nothing stands in the way: open, not closing, the write buffer
     * under its mark (no backpressure decision to make), no extension to encode, no
     * fragmented message in progress, the server side (no mask to draw). */
    if (nargs == 1 && kwnames == NULL && session_map.type == Py_TYPE(session)) {
        PyObject *conn = SLOT(session, session_map, S_CONN);
        if (conn_map.type == Py_TYPE(conn)
            && SLOT(conn, conn_map, C_STATE) == state_open
            && SLOT(conn, conn_map, C_CLOSE_SENT) == Py_None
            && SLOT(session, session_map, S_WRITE_PAUSED) == Py_False
            && PyTuple_CheckExact(SLOT(conn, conn_map, C_EXTENSIONS))
            && PyTuple_GET_SIZE(SLOT(conn, conn_map, C_EXTENSIONS)) == 0
            && is_minus_one(SLOT(conn, conn_map, C_OUT_OPCODE))
            && SLOT(conn, conn_map, C_SIDE) == side_server
            && PyList_CheckExact(SLOT(conn, conn_map, C_OUT))) {
            int queued = queue_message(conn, args[0]);
            if (queued < 0)
                return NULL;
            if (queued) {
                Counters *counters = counters_of(session);
                if (counters != NULL)
                    counters->messages_sent++;
                if (SLOT(session, session_map, S_CORKED) == Py_False && flush(session) < 0)
                    return NULL;
                Py_RETURN_TRUE;
            }
        }
    }
    /* Everything else: the session's own send, with the same arguments. */
    nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError, "send() takes message and compress");
        return NULL;
    }
    call[0] = session;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        call[1 + i] = args[i];
    return PyObject_VectorcallMethod(str_send, call, (size_t)(1 + nargs), kwnames);
}

/* A flag of the session (its _write_paused or _paused slot), read without a Python frame. */
static PyObject *
session_flag(HandleCore *self, int slot, PyObject *name)
{
    PyObject *session = self->session;

    if (session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "WebSocket without a session");
        return NULL;
    }
    if (session_map.type == Py_TYPE(session))
        return Py_NewRef(SLOT(session, session_map, slot));
    return PyObject_GetAttr(session, name);
}

static PyObject *
HandleCore_writing_paused(HandleCore *self, void *Py_UNUSED(closure))
{
    return session_flag(self, S_WRITE_PAUSED, str_writing_paused);
}

static PyObject *
HandleCore_reading_paused(HandleCore *self, void *Py_UNUSED(closure))
{
    return session_flag(self, S_PAUSED, str_reading_paused);
}

/* Session.answers_pending and answers_done, the async style's hold on a close owed to the
 * peer, called twice per message by AsyncWebSocket: the flag set in C, and the session's
 * _flush called only when there is a close to send. */
static PyObject *
HandleCore_answers(HandleCore *self, int pending)
{
    PyObject *session = self->session, *conn;

    if (session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "WebSocket without a session");
        return NULL;
    }
    if (session_map.type != Py_TYPE(session)
        || conn_map.type != Py_TYPE(conn = SLOT(session, session_map, S_CONN)))
        return PyObject_CallMethodNoArgs(session,
                                         pending ? str_answers_pending : str_answers_done);
    slot_set(session, session_map.offset[S_HOLD_FOR_APP], pending ? Py_True : Py_False);
    if (!pending
        && (SLOT(conn, conn_map, C_OWED_CLOSE) != Py_None
            || SLOT(session, session_map, S_EOF) != Py_False)
        && SLOT(session, session_map, S_BUSY) == Py_False)
        return PyObject_CallMethodNoArgs(session, str_flush);
    Py_RETURN_NONE;
}

static PyObject *
HandleCore_answers_pending(HandleCore *self, PyObject *Py_UNUSED(ignored))
{
    return HandleCore_answers(self, 1);
}

static PyObject *
HandleCore_answers_done(HandleCore *self, PyObject *Py_UNUSED(ignored))
{
    return HandleCore_answers(self, 0);
}

static PyGetSetDef HandleCore_getset[] = {
    {"writing_paused", (getter)HandleCore_writing_paused, NULL,
     PyDoc_STR("The write buffer is over write_limit: drain() would wait."), NULL},
    {"reading_paused", (getter)HandleCore_reading_paused, NULL,
     PyDoc_STR("The handler paused reading (Pause / pause_reading)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef HandleCore_methods[] = {
    {"send", (PyCFunction)(void (*)(void))HandleCore_send, METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("send(message, compress=True) -> bool\n\n"
               "Send a message (text for str). Returns False, sending nothing, once closing,\n"
               "or when the message is dropped by max_backpressure (on_drop then gets it).\n"
               "compress=False skips compression for this message.")},
    {"answers_pending", (PyCFunction)HandleCore_answers_pending, METH_NOARGS,
     PyDoc_STR("answers_pending() -> None\n\n"
               "The application got messages it answers later (the async for style): a close\n"
               "owed to the peer waits for answers_done (ANSWER_GRACE at most).")},
    {"answers_done", (PyCFunction)HandleCore_answers_done, METH_NOARGS,
     PyDoc_STR("answers_done() -> None\n\n"
               "The application has answered every message it was given.")},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef HandleCore_members[] = {
    {"_session", T_OBJECT_EX, offsetof(HandleCore, session), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HandleCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "corral._hotpath.HandleCore",
    .tp_doc = PyDoc_STR("The C half of corral.WebSocket: its send."),
    .tp_basicsize = sizeof(HandleCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)HandleCore_dealloc,
    .tp_traverse = (traverseproc)HandleCore_traverse,
    .tp_clear = (inquiry)HandleCore_clear,
    .tp_methods = HandleCore_methods,
    .tp_members = HandleCore_members,
    .tp_getset = HandleCore_getset,
};

/* ---- module ------------------------------------------------------------------------------- */

static PyMethodDef hotpath_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {NULL, NULL, 0, NULL},
};

static int
intern(PyObject **where, const char *name)
{
    *where = PyUnicode_InternFromString(name);
    return *where == NULL ? -1 : 0;
}

static int
hotpath_exec(PyObject *module)
{
    if (intern(&str_read_target, "read_target") < 0
        || intern(&str_payload_received, "payload_received") < 0
        || intern(&str_data_received, "data_received") < 0
        || intern(&str_crash, "_crash") < 0 || intern(&str_handled, "_handled") < 0
        || intern(&str_defer, "_defer") < 0 || intern(&str_flush, "_flush") < 0
        || intern(&str_answers_pending, "answers_pending") < 0
        || intern(&str_answers_done, "answers_done") < 0
        || intern(&str_send, "send") < 0 || intern(&str_on_message, "on_message") < 0
        || intern(&str_time, "time") < 0 || intern(&str_receive_data, "receive_data") < 0
        || intern(&str_handle_received, "_handle_received") < 0
        || intern(&str_write, "write") < 0 || intern(&str_writelines, "writelines") < 0
        || intern(&str_is_closing, "is_closing") < 0 || intern(&str_join, "join") < 0
        || intern(&str_writing_paused, "writing_paused") < 0
        || intern(&str_reading_paused, "reading_paused") < 0)
        return -1;
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (empty_bytes == NULL)
        return -1;
    if (PyType_Ready(&StreamCoreType) < 0 || PyType_Ready(&HandleCoreType) < 0
        || PyType_Ready(&CountersType) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "StreamCore", (PyObject *)&StreamCoreType) < 0
        || PyModule_AddObjectRef(module, "HandleCore", (PyObject *)&HandleCoreType) < 0
        || PyModule_AddObjectRef(module, "Counters", (PyObject *)&CountersType) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot hotpath_slots[] = {
    {Py_mod_exec, hotpath_exec},
    {0, NULL},
};

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "corral._hotpath",
    .m_doc = "The compiled hot path of a connection: StreamCore (reads) and HandleCore (send).",
    .m_size = 0,
    .m_methods = hotpath_methods,
    .m_slots = hotpath_slots,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    return PyModuleDef_Init(&hotpath_module);
}
