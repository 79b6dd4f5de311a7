/* The rules tagger's per-paragraph scoring, compiled (optional; rules.py has the same code in Python).
 *
 * rules.py finds the cues of a whole thinking with an Aho-Corasick automaton; this module does what
 * follows, which in Python costs more than the search itself: it adds each hit's weights to its
 * paragraph's scores, adds the position, question and entity cues, and picks the 1-2 states. The
 * floating-point operations are those of rules._tag_spans_py in the same order, so the results are
 * identical (tests/unit/annotate/test_rules.py checks both paths against the reference definition).
 *
 *   configure(pattern_weights, pattern_one_word, in_word, cue_view_table, tie, states, fallback, constants)
 *   cue_view(text, spans) -> bytearray, or None where rules.py must take the reference path
 *   tag(text, view, hits, spans, position, n_paragraphs, rematch) -> list of state tuples
 *
 * `rematch(start)` returns the automaton's hits in view[start:]; tag() calls it when a hit starts
 * inside a word and covers the next one, where a cue may start (see rules._cue_scores).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_STATES 15

static int configured = 0;
static Py_ssize_t n_patterns = 0;
static Py_ssize_t *weight_start = NULL; /* pattern p's weights: [weight_start[p], weight_start[p + 1]) */
static int *weight_state = NULL;
static double *weight_value = NULL;
static unsigned char *one_word = NULL;
static unsigned char in_word[256];
static unsigned char cue_view_table[256];
static double tie[N_STATES];
static PyObject *singles[N_STATES];
static PyObject *pairs[N_STATES][N_STATES];
static PyObject *fallback = NULL;
static int first_state, last_state, verify_state, retrieval_state;
static double first_weight, last_weight, question_weight, entity_weight, entity_cap, second_min, second_ratio,
    fallback_below;

/* Character classes of the entity cues (rules._ENTITY_RE); every non-ASCII character is "other". */
enum { C_OTHER = 0, C_LOWER = 1, C_UPPER = 2, C_DIGIT = 4, C_PUNCT = 8, C_SPACE = 16 };
static unsigned char char_class[256];

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        char_class[c] = c >= 'a' && c <= 'z' ? C_LOWER : c >= 'A' && c <= 'Z' ? C_UPPER : c >= '0' && c <= '9' ? C_DIGIT
                      : (c == ',' || c == ';' || c == ':') ? C_PUNCT : c == ' ' ? C_SPACE : C_OTHER;
    }
}

static void release(void) {
    free(weight_start); free(weight_state); free(weight_value); free(one_word);
    weight_start = NULL; weight_state = NULL; weight_value = NULL; one_word = NULL;
    for (int i = 0; i < N_STATES; i++) {
        Py_CLEAR(singles[i]);
        for (int j = 0; j < N_STATES; j++) Py_CLEAR(pairs[i][j]);
    }
    Py_CLEAR(fallback);
    configured = 0;
}

static int read_doubles(PyObject *seq, double *out, Py_ssize_t n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd numbers", what, n);
        Py_DECREF(fast);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (out[i] == -1.0 && PyErr_Occurred()) { Py_DECREF(fast); return -1; }
    }
    Py_DECREF(fast);
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *weights, *one_word_seq, *tie_seq, *states, *fallback_obj;
    Py_buffer in_word_buf, cue_view_buf;
    if (!PyArg_ParseTuple(args, "OOy*y*OOO(ididididdddd)", &weights, &one_word_seq, &in_word_buf, &cue_view_buf,
                          &tie_seq, &states,
                          &fallback_obj, &first_state, &first_weight, &last_state, &last_weight, &verify_state,
                          &question_weight, &retrieval_state, &entity_weight, &entity_cap, &second_min,
                          &second_ratio, &fallback_below))
        return NULL;
    release();
    PyObject *weights_fast = NULL, *one_word_fast = NULL;
    if (in_word_buf.len != 256 || cue_view_buf.len != 256) {
        PyErr_SetString(PyExc_ValueError, "in_word, cue_view_table: expected 256 bytes each");
        goto fail;
    }
    memcpy(in_word, in_word_buf.buf, 256);
    memcpy(cue_view_table, cue_view_buf.buf, 256);
    if (!PyTuple_Check(states) || PyTuple_GET_SIZE(states) != N_STATES) {
        PyErr_Format(PyExc_ValueError, "states: expected a tuple of %d names", N_STATES);
        goto fail;
    }
    int ids[4] = {first_state, last_state, verify_state, retrieval_state};
    for (int i = 0; i < 4; i++)
        if (ids[i] < 0 || ids[i] >= N_STATES) { PyErr_SetString(PyExc_ValueError, "state index out of range"); goto fail; }
    if (read_doubles(tie_seq, tie, N_STATES, "tie") < 0) goto fail;
    weights_fast = PySequence_Fast(weights, "pattern_weights");
    one_word_fast = PySequence_Fast(one_word_seq, "pattern_one_word");
    if (weights_fast == NULL || one_word_fast == NULL) goto fail;
    n_patterns = PySequence_Fast_GET_SIZE(weights_fast);
    if (PySequence_Fast_GET_SIZE(one_word_fast) != n_patterns) {
        PyErr_SetString(PyExc_ValueError, "pattern_one_word: one flag per pattern");
        goto fail;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t p = 0; p < n_patterns; p++) {
        Py_ssize_t n = PyObject_Length(PySequence_Fast_GET_ITEM(weights_fast, p));
        if (n < 0) goto fail;
        total += n;
    }
    weight_start = malloc(sizeof(Py_ssize_t) * (n_patterns + 1));
    weight_state = malloc(sizeof(int) * (total + 1));
    weight_value = malloc(sizeof(double) * (total + 1));
    one_word = malloc(n_patterns + 1);
    if (!weight_start || !weight_state || !weight_value || !one_word) { PyErr_NoMemory(); goto fail; }
    Py_ssize_t w = 0;
    for (Py_ssize_t p = 0; p < n_patterns; p++) {
        weight_start[p] = w;
        PyObject *pairs_p = PySequence_Fast(PySequence_Fast_GET_ITEM(weights_fast, p), "pattern weights");
        if (pairs_p == NULL) goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(pairs_p); i++, w++) {
            int state;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(pairs_p, i), "id", &state, &weight_value[w])) {
                Py_DECREF(pairs_p);
                goto fail;
            }
            if (state < 0 || state >= N_STATES) {
                PyErr_SetString(PyExc_ValueError, "pattern weights: state index out of range");
                Py_DECREF(pairs_p);
                goto fail;
            }
            weight_state[w] = state;
        }
        Py_DECREF(pairs_p);
        int flag = PyObject_IsTrue(PySequence_Fast_GET_ITEM(one_word_fast, p));
        if (flag < 0) goto fail;
        one_word[p] = (unsigned char)flag;
    }
    weight_start[n_patterns] = w;
    for (int i = 0; i < N_STATES; i++) {
        PyObject *a = PyTuple_GET_ITEM(states, i);
        singles[i] = PyTuple_Pack(1, a);
        if (singles[i] == NULL) goto fail;
        for (int j = 0; j < N_STATES; j++) {
            pairs[i][j] = PyTuple_Pack(2, a, PyTuple_GET_ITEM(states, j));
            if (pairs[i][j] == NULL) goto fail;
        }
    }
    Py_INCREF(fallback_obj);
    fallback = fallback_obj;
    Py_DECREF(weights_fast);
    Py_DECREF(one_word_fast);
    PyBuffer_Release(&in_word_buf);
    PyBuffer_Release(&cue_view_buf);
    configured = 1;
    Py_RETURN_NONE;
fail:
    Py_XDECREF(weights_fast);
    Py_XDECREF(one_word_fast);
    PyBuffer_Release(&in_word_buf);
    PyBuffer_Release(&cue_view_buf);
    release();
    return NULL;
}

static int read_span(PyObject *span, Py_ssize_t *start, Py_ssize_t *end) {
    if (PyTuple_Check(span) && PyTuple_GET_SIZE(span) == 2) {
        *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 0));
        *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 1));
        return PyErr_Occurred() ? -1 : 0;
    }
    return PyArg_ParseTuple(span, "nn", start, end) ? 0 : -1;
}

/* The entity and question cues of text[start:end] on its own: the matches of rules._ENTITY_RE (a
 * capitalised word or acronym after [a-z0-9,;:] and a space; a number of 2+ digits) and "?" in it.
 * `history` holds the classes of the last 4 characters, the newest in the low byte (0: outside). */
#define CAPITALISED(history) (((history) & 0xFFFF00u) == (C_SPACE << 16 | C_UPPER << 8) \
                              && (history) & (C_LOWER | C_UPPER) && (history) >> 24 & (C_LOWER | C_DIGIT | C_PUNCT))
#define NUMBER_STARTS(history) (((history) & 0xFFFFu) == (C_DIGIT << 8 | C_DIGIT) && ((history) >> 16 & 0xFF) != C_DIGIT)

static void span_cues(int kind, const void *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t *n_entities,
                      int *has_question) {
    Py_ssize_t n = 0;
    uint32_t history = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *t = (const Py_UCS1 *)data;
        for (Py_ssize_t i = start; i < end; i++) {
            history = history << 8 | char_class[t[i]];
            if (history & (C_UPPER | C_DIGIT) << 8) n += CAPITALISED(history) || NUMBER_STARTS(history);
        }
        *has_question = memchr(t + start, '?', end - start) != NULL;
    } else {
        int question = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            history = history << 8 | (ch < 256 ? char_class[ch] : C_OTHER);
            if (history & (C_UPPER | C_DIGIT) << 8) n += CAPITALISED(history) || NUMBER_STARTS(history);
            question |= ch == '?';
        }
        *has_question = question;
    }
    *n_entities = n;
}

/* The states of one span from its scores s (modified): the top state, and the runner-up when strong and close. */
static PyObject *decide(double *s) {
    int top = 0, second = 0;
    for (int i = 1; i < N_STATES; i++)
        if (s[i] > s[top]) top = i; /* the first maximum, as max() and list.index() */
    double top_score = s[top];
    if (top_score < fallback_below) return fallback;
    s[top] = 0.0;
    for (int i = 1; i < N_STATES; i++)
        if (s[i] > s[second]) second = i;
    double second_score = s[second];
    if (second_score >= second_min && second_score >= second_ratio * top_score) return pairs[top][second];
    return singles[top];
}

/* The cue view byte of a character beyond Latin-1 (rules._cue_view), or -1 when its lower case is not one
 * non-ASCII character (the Kelvin sign, a dotted capital I: the caller then takes the reference path). */
static int wide_cue_view_byte(Py_UCS4 ch) {
    PyObject *original = PyUnicode_FromOrdinal(ch);
    PyObject *low = original == NULL ? NULL : PyObject_CallMethod(original, "lower", NULL);
    Py_XDECREF(original);
    if (low == NULL) return -2;
    int byte = -1;
    if (PyUnicode_GET_LENGTH(low) == 1) {
        Py_UCS4 c = PyUnicode_READ_CHAR(low, 0);
        if (c >= 128) byte = Py_UNICODE_ISALNUM(c) || c == '_' ? '0' : '#';
    }
    Py_DECREF(low);
    return byte;
}

/* The cue view of text (rules._cue_view): one byte per character, "#" around each span; or None when
 * some character lower-cases to ASCII or to several characters. */
static PyObject *cue_view(PyObject *self, PyObject *args) {
    PyObject *text, *spans;
    if (!PyArg_ParseTuple(args, "UO", &text, &spans)) return NULL;
    if (!configured) { PyErr_SetString(PyExc_RuntimeError, "configure() first"); return NULL; }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *spans_fast = PySequence_Fast(spans, "spans");
    if (spans_fast == NULL) return NULL;
    PyObject *view = PyByteArray_FromStringAndSize(NULL, n);
    if (view == NULL) { Py_DECREF(spans_fast); return NULL; }
    unsigned char *v = (unsigned char *)PyByteArray_AS_STRING(view);
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *t = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 0; i < n; i++) v[i] = cue_view_table[t[i]];
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            int byte = ch < 256 ? cue_view_table[ch] : wide_cue_view_byte(ch);
            if (byte < 0) {
                Py_DECREF(spans_fast);
                Py_DECREF(view);
                if (byte == -2) return NULL;
                Py_RETURN_NONE;
            }
            v[i] = (unsigned char)byte;
        }
    }
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(spans_fast); k++) {
        Py_ssize_t a, b;
        if (read_span(PySequence_Fast_GET_ITEM(spans_fast, k), &a, &b) < 0 || a < 1 || b < a || b >= n) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "spans[%zd] = (%zd, %zd): not inside the text", k, a, b);
            Py_DECREF(spans_fast);
            Py_DECREF(view);
            return NULL;
        }
        v[a - 1] = v[b] = '#';
    }
    Py_DECREF(spans_fast);
    return view;
}

static PyObject *tag(PyObject *self, PyObject *args) {
    PyObject *text, *hits, *spans, *rematch;
    Py_buffer view;
    Py_ssize_t position, n_paragraphs;
    if (!PyArg_ParseTuple(args, "Uy*OOnnO", &text, &view, &hits, &spans, &position, &n_paragraphs, &rematch))
        return NULL;
    PyObject *spans_fast = NULL, *hits_fast = NULL, *out = NULL;
    double *scores = NULL;
    Py_ssize_t *bounds = NULL, n_spans = 0, k, offset = 0; /* hits are relative to view[offset:] */
    const unsigned char *v = view.buf;
    Py_ssize_t text_len = PyUnicode_GET_LENGTH(text);
    if (!configured) { PyErr_SetString(PyExc_RuntimeError, "configure() first"); goto done; }
    if (view.len != text_len) { PyErr_SetString(PyExc_ValueError, "view: one byte per character"); goto done; }
    spans_fast = PySequence_Fast(spans, "spans");
    hits_fast = PySequence_Fast(hits, "hits");
    if (spans_fast == NULL || hits_fast == NULL) goto done;
    n_spans = PySequence_Fast_GET_SIZE(spans_fast);
    scores = malloc(sizeof(double) * N_STATES * (n_spans + 1));
    bounds = malloc(sizeof(Py_ssize_t) * 2 * (n_spans + 1));
    if (scores == NULL || bounds == NULL) { PyErr_NoMemory(); goto done; }
    for (k = 0; k < n_spans; k++) {
        Py_ssize_t a, b;
        if (read_span(PySequence_Fast_GET_ITEM(spans_fast, k), &a, &b) < 0) goto done;
        if (a < 1 || b < a || b >= text_len || (k > 0 && a <= bounds[2 * k - 1])) {
            PyErr_Format(PyExc_ValueError, "spans[%zd] = (%zd, %zd): spans must be in order, apart, inside the "
                         "text and off its ends", k, a, b);
            goto done;
        }
        bounds[2 * k] = a;
        bounds[2 * k + 1] = b;
        memcpy(scores + N_STATES * k, tie, sizeof(tie));
    }
    /* 1. The cue hits, in order, each to its span; a hit that starts inside a word is no cue, and when
     *    it covers the next word the search starts again there (see rules._cue_scores). */
    k = 0;
    for (Py_ssize_t h = 0; h < PySequence_Fast_GET_SIZE(hits_fast) && k < n_spans; h++) {
        PyObject *hit = PySequence_Fast_GET_ITEM(hits_fast, h);
        if (!PyTuple_Check(hit) || PyTuple_GET_SIZE(hit) < 2) {
            PyErr_SetString(PyExc_TypeError, "hits: expected (pattern, start, end) tuples");
            goto done;
        }
        Py_ssize_t pattern = PyLong_AsSsize_t(PyTuple_GET_ITEM(hit, 0));
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(hit, 1)) + offset;
        if (PyErr_Occurred()) goto done;
        if (pattern < 0 || pattern >= n_patterns || start < 0 || start >= text_len) {
            PyErr_SetString(PyExc_ValueError, "hits: pattern or start out of range");
            goto done;
        }
        while (k < n_spans && start >= bounds[2 * k + 1]) k++;
        if (k == n_spans || start < bounds[2 * k]) continue;
        if (in_word[v[start - 1]]) {
            if (!one_word[pattern]) {
                for (offset = start; offset < text_len && in_word[v[offset]]; offset++) {}
                PyObject *more = PyObject_CallFunction(rematch, "n", offset);
                if (more == NULL) goto done;
                Py_SETREF(hits_fast, PySequence_Fast(more, "rematch()"));
                Py_DECREF(more);
                if (hits_fast == NULL) goto done;
                h = -1;
            }
            continue;
        }
        double *s = scores + N_STATES * k;
        for (Py_ssize_t w = weight_start[pattern]; w < weight_start[pattern + 1]; w++) s[weight_state[w]] += weight_value[w];
    }
    /* 2. Per span, in the order of rules._tag_spans_py: the position, question and entity cues, the states. */
    out = PyList_New(n_spans);
    if (out == NULL) goto done;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (k = 0; k < n_spans; k++, position++) {
        double *s = scores + N_STATES * k;
        Py_ssize_t n_entities;
        int question;
        if (position == 0) s[first_state] += first_weight;
        else if (position == n_paragraphs - 1) s[last_state] += last_weight;
        span_cues(kind, data, bounds[2 * k], bounds[2 * k + 1], &n_entities, &question);
        if (position > 0 && question) s[verify_state] += question_weight;
        if (n_entities) {
            double e = entity_weight * (double)n_entities;
            s[retrieval_state] += e < entity_cap ? e : entity_cap;
        }
        PyObject *states = decide(s);
        Py_INCREF(states);
        PyList_SET_ITEM(out, k, states);
    }
done:
    free(scores);
    free(bounds);
    Py_XDECREF(spans_fast);
    Py_XDECREF(hits_fast);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Load the cue weights, states and constants of rules.py."},
    {"cue_view", cue_view, METH_VARARGS, "The cue view of text around spans (see rules._cue_view), or None."},
    {"tag", tag, METH_VARARGS, "States of each span from its cue hits (see rules._tag_spans_py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rules_c", "The rules tagger's scoring, compiled.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rules_c(void) {
    init_classes();
    return PyModule_Create(&module);
}
