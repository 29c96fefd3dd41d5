/* corral._http: the compiled twin of corral/_pure_http.py, a request-head parser for the
 * common case (RFC 9112 sections 3 and 5).
 *
 * _pure_http.py is the source of truth: parse_head here takes the same arguments and gives
 * the same results, and it accepts only what llhttp accepts and parses the same way, so
 * corral.protocol.http11 can give everything it declines to llhttp as before;
 * tests/protocol/test_http_head.py checks both. corral/accel.py picks which one runs.
 *
 * No third-party code; CPython C API only. The head is read in two passes: the first checks
 * the whole grammar and every limit without allocating anything (a declined head costs no
 * object), the second builds the strings.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- character classes --------------------------------------------------------------------- */

#define C_TCHAR 1  /* token (RFC 9110 5.6.2): a field name */
#define C_TARGET 2 /* in an origin-form target: VCHAR but "#", which starts a fragment */
#define C_VALUE 4  /* in a field value (RFC 9110 5.5): VCHAR, obs-text, SP, HTAB */

static const unsigned char CLASS[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0,  /* 00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  /* 10 */
    4, 7, 6, 5, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,  /* 20 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6,  /* 30 */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  /* 40 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,  /* 50 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  /* 60 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,  /* 70 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* 80 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* 90 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* a0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* b0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* c0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* d0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* e0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,  /* f0 */
};

static unsigned char
ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Whether p[0:n] is the lowercase ASCII word, ignoring case. */
static int
is_word(const unsigned char *p, Py_ssize_t n, const char *word)
{
    if ((size_t)n != strlen(word))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ascii_lower(p[i]) != (unsigned char)word[i])
            return 0;
    return 1;
}

/* The methods llhttp knows that need nothing special (not CONNECT). */
static const char *const METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
#define N_METHODS (sizeof(METHODS) / sizeof(METHODS[0]))

/* _pure_http.REPEATING: fields whose values are shared strings (exported as REPEATING, which
 * the tests compare with the pure list). */
static const char *const REPEATING[] = {
    "host", "upgrade", "connection", "origin", "sec-websocket-version", "user-agent",
    "sec-websocket-extensions", "sec-websocket-protocol", "pragma", "cache-control",
    "accept-encoding", "accept-language",
};
#define N_REPEATING (sizeof(REPEATING) / sizeof(REPEATING[0]))

/* ---- shared strings ------------------------------------------------------------------------ */

/* Field names, their lowercased twins and the values of REPEATING fields come again on
 * every connection: one string each is kept in a direct-mapped table (a new string takes the
 * slot of the one it collides with), so memory stays bounded whatever names a peer sends and
 * a lookup costs one hash and one compare. */
#define NAME_SLOTS 256
#define VALUE_SLOTS 256
#define SHARED_MAX 128 /* longer strings are not kept */

typedef struct {
    PyObject *name; /* as sent (ASCII) */
    PyObject *key;  /* lowercased; the same object when the name has no capital */
    int repeating;
} NameSlot;

typedef struct {
    NameSlot names[NAME_SLOTS];
    PyObject *values[VALUE_SLOTS];
    PyObject *methods[N_METHODS];
    PyObject *versions[2]; /* "1.0", "1.1" */
    PyObject *empty;
} HttpState;

static uint32_t
hash_bytes(const unsigned char *p, Py_ssize_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h ^ (h >> 16);
}

/* Whether str (a 1-byte-kind string) holds exactly p[0:n]. */
static int
same_text(PyObject *str, const unsigned char *p, Py_ssize_t n)
{
    return str != NULL && PyUnicode_GET_LENGTH(str) == n
           && memcmp(PyUnicode_1BYTE_DATA(str), p, (size_t)n) == 0;
}

/* New references to the name p[0:n] (tchar only, so ASCII) and its lowercased twin. */
static int
field_name(HttpState *st, const unsigned char *p, Py_ssize_t n, PyObject **name, PyObject **key,
           int *repeating)
{
    NameSlot *slot = NULL;
    Py_ssize_t i;
    int upper = 0;
    unsigned char *out;

    if (n <= SHARED_MAX) {
        slot = &st->names[hash_bytes(p, n) & (NAME_SLOTS - 1)];
        if (same_text(slot->name, p, n)) {
            *name = Py_NewRef(slot->name);
            *key = Py_NewRef(slot->key);
            *repeating = slot->repeating;
            return 0;
        }
    }
    *name = PyUnicode_New(n, 127);
    if (*name == NULL)
        return -1;
    memcpy(PyUnicode_1BYTE_DATA(*name), p, (size_t)n);
    for (i = 0; i < n; i++)
        upper |= p[i] >= 'A' && p[i] <= 'Z';
    if (upper) {
        *key = PyUnicode_New(n, 127);
        if (*key == NULL) {
            Py_CLEAR(*name);
            return -1;
        }
        out = PyUnicode_1BYTE_DATA(*key);
        for (i = 0; i < n; i++)
            out[i] = ascii_lower(p[i]);
    } else {
        *key = Py_NewRef(*name);
    }
    *repeating = 0;
    for (size_t r = 0; r < N_REPEATING; r++)
        if (is_word(p, n, REPEATING[r]))
            *repeating = 1;
    if (slot != NULL) {
        Py_XSETREF(slot->name, Py_NewRef(*name));
        Py_XSETREF(slot->key, Py_NewRef(*key));
        slot->repeating = *repeating;
    }
    return 0;
}

/* A new reference to the value p[0:n] decoded as Latin-1; shared when `shared`. */
static PyObject *
field_value(HttpState *st, const unsigned char *p, Py_ssize_t n, int shared)
{
    PyObject **slot, *value;

    if (!shared || n > SHARED_MAX)
        return PyUnicode_DecodeLatin1((const char *)p, n, NULL);
    slot = &st->values[hash_bytes(p, n) & (VALUE_SLOTS - 1)];
    if (same_text(*slot, p, n))
        return Py_NewRef(*slot);
    value = PyUnicode_DecodeLatin1((const char *)p, n, NULL);
    if (value != NULL)
        Py_XSETREF(*slot, Py_NewRef(value));
    return value;
}

/* ---- the grammar ---------------------------------------------------------------------------- */

/* One field line (RFC 9112 5: field-name ":" OWS field-value OWS CRLF). */
typedef struct {
    const unsigned char *name;
    Py_ssize_t name_len;
    const unsigned char *value; /* llhttp's value: after the leading OWS, up to the CR */
    Py_ssize_t value_len;
    const unsigned char *next; /* the next line */
} Field;

/* Read the field line at p; 0 if it is not a well-formed one (an obs-fold, a bare CR or LF,
 * a character out of place, or the end of the data first). */
static int
field_line(const unsigned char *p, const unsigned char *end, Field *f)
{
    f->name = p;
    while (p < end && (CLASS[*p] & C_TCHAR))
        p++;
    f->name_len = p - f->name;
    if (f->name_len == 0 || p == end || *p != ':')
        return 0;
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    f->value = p;
    while (p < end && (CLASS[*p] & C_VALUE))
        p++;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return 0;
    f->value_len = p - f->value;
    f->next = p + 2;
    return 1;
}

#define CONN_CLOSE 1
#define CONN_KEEP_ALIVE 2
#define CONN_UPGRADE 4

/* Add the options of a Connection value (RFC 9110 7.6.1: a comma-separated list) to *flags,
 * as llhttp reads them; 0 for a value with a tab or obs-text, which is declined. */
static int
connection_options(const unsigned char *p, Py_ssize_t n, int *flags)
{
    Py_ssize_t i, start, stop, last;

    for (i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return 0;
    for (i = 0; i <= n; i = stop + 1) { /* each element, then past its comma */
        for (stop = i; stop < n && p[stop] != ','; stop++)
            ;
        start = i;
        while (start < stop && p[start] == ' ')
            start++;
        last = stop;
        while (last > start && p[last - 1] == ' ')
            last--;
        if (is_word(p + start, last - start, "close"))
            *flags |= CONN_CLOSE;
        else if (is_word(p + start, last - start, "keep-alive"))
            *flags |= CONN_KEEP_ALIVE;
        else if (is_word(p + start, last - start, "upgrade"))
            *flags |= CONN_UPGRADE;
    }
    return 1;
}

typedef struct {
    int method;
    int minor;                    /* of HTTP/1.x */
    const unsigned char *target;
    Py_ssize_t target_len;
    Py_ssize_t path_len;          /* up to the first "?" */
    const unsigned char *fields;  /* the first field line */
    Py_ssize_t count;
    int keep_alive;
    int upgrade;
    const unsigned char *end;     /* after the empty line */
} Head;

/* First pass: whether the head at p is accepted (see _pure_http.parse_head); nothing is
 * allocated. */
static int
check_head(const unsigned char *p, const unsigned char *end, Py_ssize_t max_line,
           Py_ssize_t max_count, Py_ssize_t max_bytes, Head *h)
{
    const unsigned char *line = p, *question = NULL;
    Py_ssize_t size = 0;
    int options = 0, upgrade_field = 0, content_length = 0;
    size_t m;
    Field f;

    /* RFC 9112 3: method SP request-target SP HTTP-version CRLF */
    for (m = 0; m < N_METHODS; m++) {
        size_t n = strlen(METHODS[m]);
        if ((size_t)(end - p) > n && memcmp(p, METHODS[m], n) == 0 && p[n] == ' ') {
            p += n + 1;
            break;
        }
    }
    if (m == N_METHODS)
        return 0;
    h->method = (int)m;
    if (p == end || *p != '/') /* origin-form only (RFC 9112 3.2.1) */
        return 0;
    h->target = p;
    while (p < end && (CLASS[*p] & C_TARGET)) {
        if (*p == '?' && question == NULL)
            question = p;
        p++;
    }
    h->target_len = p - h->target;
    h->path_len = (question != NULL ? question : p) - h->target;
    if (end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0 || (p[8] != '0' && p[8] != '1')
            || p[9] != '\r' || p[10] != '\n')
        return 0;
    h->minor = p[8] - '0';
    if (p + 9 - line > max_line)
        return 0;
    p += 11;

    /* RFC 9112 5: field lines up to the empty line. Limits as RequestParser counts the
     * fields llhttp reports: each line, the count, and names plus values (llhttp's value
     * keeps its trailing OWS). */
    h->fields = p;
    h->count = 0;
    while (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
        if (!field_line(p, end, &f) || f.next - 2 - p > max_line)
            return 0;
        h->count++;
        size += f.name_len + f.value_len;
        if (h->count > max_count || size > max_bytes)
            return 0;
        if (is_word(f.name, f.name_len, "transfer-encoding")
                || is_word(f.name, f.name_len, "proxy-connection")) {
            return 0;
        } else if (is_word(f.name, f.name_len, "content-length")) {
            /* a repeated Content-Length is an error for llhttp, even if equal */
            if (f.value_len != 1 || f.value[0] != '0' || content_length)
                return 0;
            content_length = 1;
        } else if (is_word(f.name, f.name_len, "connection")) {
            if (!connection_options(f.value, f.value_len, &options))
                return 0;
        } else if (is_word(f.name, f.name_len, "upgrade")) {
            if (f.value_len == 0)
                return 0;
            upgrade_field = 1;
        }
        p = f.next;
    }
    h->end = p + 2;
    /* llhttp's verdicts: upgrade needs an Upgrade field and the "upgrade" connection option
     * (RFC 9110 7.8); HTTP/1.1 stays open unless "close", HTTP/1.0 only with "keep-alive"
     * (RFC 9112 9.3). */
    h->upgrade = upgrade_field && (options & CONN_UPGRADE);
    h->keep_alive = h->minor == 1 ? !(options & CONN_CLOSE) : !!(options & CONN_KEEP_ALIVE);
    return 1;
}

/* Second pass: the (lowercased name, name, value) list of an accepted head. */
static PyObject *
build_fields(HttpState *st, const Head *h, const unsigned char *end)
{
    PyObject *fields = PyList_New(3 * h->count), *name, *key, *value;
    const unsigned char *p = h->fields;
    Py_ssize_t n;
    int repeating;
    Field f;

    if (fields == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < h->count; i++) {
        if (!field_line(p, end, &f)) { /* cannot happen: check_head read the same lines */
            PyErr_SetString(PyExc_SystemError, "corral._http: head changed while parsed");
            goto error;
        }
        n = f.value_len;
        while (n > 0 && (f.value[n - 1] == ' ' || f.value[n - 1] == '\t'))
            n--;
        if (field_name(st, f.name, f.name_len, &name, &key, &repeating) < 0)
            goto error;
        PyList_SET_ITEM(fields, 3 * i, key);
        PyList_SET_ITEM(fields, 3 * i + 1, name);
        value = field_value(st, f.value, n, repeating);
        if (value == NULL)
            goto error;
        PyList_SET_ITEM(fields, 3 * i + 2, value);
        p = f.next;
    }
    return fields;

error:
    Py_DECREF(fields); /* the items not yet set are NULL, which list_dealloc skips */
    return NULL;
}

static PyObject *
build_head(HttpState *st, const Head *h, const unsigned char *buf, const unsigned char *end)
{
    PyObject *target, *raw_path = NULL, *query = NULL, *fields = NULL, *offset = NULL;
    PyObject *result = NULL;

    target = PyUnicode_New(h->target_len, 127);
    if (target == NULL)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(target), h->target, (size_t)h->target_len);
    if (h->path_len == h->target_len) {
        raw_path = Py_NewRef(target); /* one string where they are equal */
        query = Py_NewRef(st->empty);
    } else {
        raw_path = PyUnicode_Substring(target, 0, h->path_len);
        query = PyUnicode_Substring(target, h->path_len + 1, h->target_len);
    }
    if (raw_path == NULL || query == NULL)
        goto error;
    fields = build_fields(st, h, end);
    if (fields == NULL)
        goto error;
    offset = PyLong_FromSsize_t(h->end - buf);
    if (offset == NULL)
        goto error;
    result = PyTuple_New(9);
    if (result == NULL)
        goto error;
    PyTuple_SET_ITEM(result, 0, Py_NewRef(st->methods[h->method]));
    PyTuple_SET_ITEM(result, 1, target);
    PyTuple_SET_ITEM(result, 2, raw_path);
    PyTuple_SET_ITEM(result, 3, query);
    PyTuple_SET_ITEM(result, 4, Py_NewRef(st->versions[h->minor]));
    PyTuple_SET_ITEM(result, 5, fields);
    PyTuple_SET_ITEM(result, 6, PyBool_FromLong(h->keep_alive));
    PyTuple_SET_ITEM(result, 7, PyBool_FromLong(h->upgrade));
    PyTuple_SET_ITEM(result, 8, offset);
    return result;

error:
    Py_XDECREF(offset);
    Py_XDECREF(fields);
    Py_XDECREF(query);
    Py_XDECREF(raw_path);
    Py_DECREF(target);
    return NULL;
}

PyDoc_STRVAR(parse_head_doc,
"parse_head(data, pos, max_request_line, max_header_count, max_header_bytes, /)\n\n"
"The request head at data[pos] as (method, target, raw_path, query, http_version, fields,\n"
"keep_alive, upgrade, end), or None to leave it to llhttp: see corral._pure_http.");

/* Called once per request with five positional arguments: METH_FASTCALL skips the generic
 * argument parser. Limits beyond Py_ssize_t are clipped, which compares the same. */
static PyObject *
parse_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    HttpState *st = PyModule_GetState(module);
    Py_ssize_t pos, limits[3];
    Py_buffer view;
    const unsigned char *buf, *end;
    PyObject *result;
    Head h;

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "parse_head() takes 5 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    pos = PyNumber_AsSsize_t(args[1], NULL);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    for (int i = 0; i < 3; i++) {
        limits[i] = PyNumber_AsSsize_t(args[2 + i], NULL);
        if (limits[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return NULL;
    }
    buf = view.buf;
    end = buf + view.len;
    if (check_head(buf + pos, end, limits[0], limits[1], limits[2], &h))
        result = build_head(st, &h, buf, end);
    else
        result = Py_NewRef(Py_None);
    PyBuffer_Release(&view);
    return result;
}

/* ---- module ------------------------------------------------------------------------------- */

static PyMethodDef http_methods[] = {
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL, parse_head_doc},
    {NULL, NULL, 0, NULL},
};

static int
http_exec(PyObject *module)
{
    HttpState *st = PyModule_GetState(module);
    PyObject *names, *repeating;
    size_t i;

    for (i = 0; i < N_METHODS; i++)
        if ((st->methods[i] = PyUnicode_InternFromString(METHODS[i])) == NULL)
            return -1;
    if ((st->versions[0] = PyUnicode_InternFromString("1.0")) == NULL
            || (st->versions[1] = PyUnicode_InternFromString("1.1")) == NULL
            || (st->empty = PyUnicode_New(0, 0)) == NULL)
        return -1;
    names = PyList_New(N_REPEATING);
    if (names == NULL)
        return -1;
    for (i = 0; i < N_REPEATING; i++) {
        PyObject *name = PyUnicode_FromString(REPEATING[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyList_SET_ITEM(names, (Py_ssize_t)i, name);
    }
    repeating = PyFrozenSet_New(names);
    Py_DECREF(names);
    if (repeating == NULL)
        return -1;
    if (PyModule_AddObject(module, "REPEATING", repeating) < 0) {
        Py_DECREF(repeating);
        return -1;
    }
    return 0;
}

static int
http_traverse(PyObject *module, visitproc visit, void *arg)
{
    HttpState *st = PyModule_GetState(module);
    size_t i;

    if (st == NULL)
        return 0;
    for (i = 0; i < NAME_SLOTS; i++) {
        Py_VISIT(st->names[i].name);
        Py_VISIT(st->names[i].key);
    }
    for (i = 0; i < VALUE_SLOTS; i++)
        Py_VISIT(st->values[i]);
    for (i = 0; i < N_METHODS; i++)
        Py_VISIT(st->methods[i]);
    Py_VISIT(st->versions[0]);
    Py_VISIT(st->versions[1]);
    Py_VISIT(st->empty);
    return 0;
}

static int
http_clear(PyObject *module)
{
    HttpState *st = PyModule_GetState(module);
    size_t i;

    if (st == NULL)
        return 0;
    for (i = 0; i < NAME_SLOTS; i++) {
        Py_CLEAR(st->names[i].name);
        Py_CLEAR(st->names[i].key);
    }
    for (i = 0; i < VALUE_SLOTS; i++)
        Py_CLEAR(st->values[i]);
    for (i = 0; i < N_METHODS; i++)
        Py_CLEAR(st->methods[i]);
    Py_CLEAR(st->versions[0]);
    Py_CLEAR(st->versions[1]);
    Py_CLEAR(st->empty);
    return 0;
}

static void
http_free(void *module)
{
    http_clear((PyObject *)module);
}

static PyModuleDef_Slot http_slots[] = {
    {Py_mod_exec, http_exec},
    {0, NULL},
};

static struct PyModuleDef http_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "corral._http",
    .m_doc = "Compiled twin of corral._pure_http: the common HTTP/1.1 request head without "
             "llhttp's callbacks.",
    .m_size = sizeof(HttpState),
    .m_methods = http_methods,
    .m_slots = http_slots,
    .m_traverse = http_traverse,
    .m_clear = http_clear,
    .m_free = http_free,
};

PyMODINIT_FUNC
PyInit__http(void)
{
    return PyModuleDef_Init(&http_module);
}
