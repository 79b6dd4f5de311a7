/* Think blocks and paragraph spans, compiled (optional; segment.py has the same functions in Python).
 *
 *   think_blocks(response) -> ([(start, end), ...], end of the last "</think>" or None): segment._think_blocks_py
 *   paragraph_spans(text, start, stop) -> [(start, end), ...]: segment._paragraph_spans_py
 *
 * A 1,000-token rollout is parsed on every PPO reward call; in Python, the tag and blank-line searches and
 * a loop per paragraph cost more than the rest of parse_response. Whitespace is Py_UNICODE_ISSPACE, what
 * str.isspace() and the regex "\s" test, so the results are identical (tests/unit/core/test_segment.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define CHAR(i) PyUnicode_READ(kind, data, (i))
#define SPACE(i) Py_UNICODE_ISSPACE(CHAR(i))

/* The next "\n" in text[i:stop], or stop. */
static Py_ssize_t next_newline(int kind, const void *data, Py_ssize_t i, Py_ssize_t stop) {
    if (kind == PyUnicode_1BYTE_KIND) {
        const char *found = memchr((const char *)data + i, '\n', stop - i);
        return found == NULL ? stop : found - (const char *)data;
    }
    while (i < stop && CHAR(i) != '\n') i++;
    return i;
}

static int append_span(PyObject *spans, Py_ssize_t start, Py_ssize_t end) {
    PyObject *span = PyTuple_New(2), *a = PyLong_FromSsize_t(start), *b = PyLong_FromSsize_t(end);
    if (span == NULL || a == NULL || b == NULL) {
        Py_XDECREF(span); Py_XDECREF(a); Py_XDECREF(b);
        return -1;
    }
    PyTuple_SET_ITEM(span, 0, a);
    PyTuple_SET_ITEM(span, 1, b);
    int failed = PyList_Append(spans, span);
    Py_DECREF(span);
    return failed;
}

/* text[i:i + 6] == "think>" */
static int think_tag_at(int kind, const void *data, Py_ssize_t n, Py_ssize_t i) {
    static const char tag[] = "think>";
    if (i + 6 > n) return 0;
    for (int k = 0; k < 6; k++)
        if (CHAR(i + k) != (Py_UCS4)tag[k]) return 0;
    return 1;
}

/* The content spans of the think blocks and the end of the last "</think>" (see segment._think_blocks_py):
 * every "<think>" opens a block, closing an open one; every "</think>" closes the open block, or one that
 * began after the previous "</think>" or at 0. */
static PyObject *think_blocks(PyObject *self, PyObject *args) {
    PyObject *response;
    if (!PyArg_ParseTuple(args, "U", &response)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(response), block_start = -1, last_close = 0;
    int kind = PyUnicode_KIND(response);
    const void *data = PyUnicode_DATA(response);
    PyObject *blocks = PyList_New(0);
    if (blocks == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (kind == PyUnicode_1BYTE_KIND) { /* the next "<" */
            const char *found = memchr((const char *)data + i, '<', n - i);
            if (found == NULL) break;
            i = found - (const char *)data;
        } else if (CHAR(i) != '<') {
            continue;
        }
        if (think_tag_at(kind, data, n, i + 1)) { /* "<think>" */
            if (block_start >= 0 && append_span(blocks, block_start, i) < 0) goto fail;
            block_start = i + 7;
            i += 6;
        } else if (i + 1 < n && CHAR(i + 1) == '/' && think_tag_at(kind, data, n, i + 2)) { /* "</think>" */
            if (append_span(blocks, block_start >= 0 ? block_start : last_close, i) < 0) goto fail;
            block_start = -1;
            last_close = i + 8;
            i += 7;
        }
    }
    if (block_start >= 0) {
        if (append_span(blocks, block_start, n) < 0) goto fail;
        return Py_BuildValue("(NO)", blocks, Py_None);
    }
    return Py_BuildValue("(Nn)", blocks, last_close);
fail:
    Py_DECREF(blocks);
    return NULL;
}

/* The paragraphs of text[start:stop]: split on blank lines ("\n", whitespace other than "\n", "\n", then
 * any whitespace), each stripped of whitespace, none empty (see segment.split_paragraphs). */
static PyObject *paragraph_spans(PyObject *self, PyObject *args) {
    PyObject *text;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "Unn", &text, &start, &stop)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (start < 0 || stop > n || start > stop) {
        PyErr_Format(PyExc_ValueError, "[%zd:%zd] is not a slice of a text of length %zd", start, stop, n);
        return NULL;
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *spans = PyList_New(0);
    if (spans == NULL) return NULL;
    while (start < stop && SPACE(start)) start++;
    while (stop > start && SPACE(stop - 1)) stop--;
    Py_ssize_t i = next_newline(kind, data, start, stop);
    while (i < stop) {
        Py_ssize_t j = i + 1;
        while (j < stop && CHAR(j) != '\n' && SPACE(j)) j++;
        if (j < stop && CHAR(j) == '\n') { /* a blank line: the paragraph ends before i */
            Py_ssize_t end = i;
            while (SPACE(end - 1)) end--; /* text[start] is not whitespace */
            if (append_span(spans, start, end) < 0) { Py_DECREF(spans); return NULL; }
            for (start = j + 1; start < stop && SPACE(start); start++) {}
            j = start;
        }
        i = next_newline(kind, data, j, stop);
    }
    if (start < stop && append_span(spans, start, stop) < 0) { Py_DECREF(spans); return NULL; }
    return spans;
}

static PyMethodDef methods[] = {
    {"think_blocks", think_blocks, METH_VARARGS, "Content spans of the think blocks, end of the last </think> or None."},
    {"paragraph_spans", paragraph_spans, METH_VARARGS, "Spans of the paragraphs of text[start:stop] (see segment.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_segment_c", "Think blocks and paragraph spans, compiled.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__segment_c(void) { return PyModule_Create(&module); }
