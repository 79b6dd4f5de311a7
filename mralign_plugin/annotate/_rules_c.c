/* The rules tagger, compiled (optional; rules.py has the same tagger in Python).
 *
 * One call tags every paragraph of a thinking: it builds the cue view of the text (rules._cue_view), finds
 * the cues of each paragraph by walking a trie of the cue phrases from each word start, adds their weights,
 * the position, question and entity cues, and picks the 1-2 states. The walk keeps the longest cue that
 * ends on a word boundary (or right after a ","), then goes on from its end: the leftmost-longest,
 * non-overlapping matches of rules._CUE_RE, the definition. Weights are added in the order of the cues in
 * the text and the floating-point operations are those of rules._tag_spans_py in the same order, so the
 * results are identical (tests/unit/annotate/test_rules.py checks both paths against the definition).
 *
 *   configure(cue_weights, trie, in_word, cue_view_table, tie, states, fallback, constants)
 *   tag(text, spans, position, n_paragraphs) -> list of state tuples, or None where rules.py must take
 *       the reference path (a character whose lower case is ASCII or several characters)
 *
 * The trie (rules._cue_trie) is a dense table: each cue-view byte's column (0 for a byte no cue contains),
 * per node its child on each column (0: none; node 0 is the root) and the cue ending there (-1: none), and
 * per cue whether its last character is a word character (it then needs a boundary after it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER)
#include <intrin.h>
static int ctz64(uint64_t x) { unsigned long i; _BitScanForward64(&i, x); return (int)i; }
#else
#define ctz64(x) __builtin_ctzll(x)
#endif

#define N_STATES 15

static int configured = 0;
static Py_ssize_t n_cues = 0;
static Py_ssize_t *weight_start = NULL; /* cue c's weights: [weight_start[c], weight_start[c + 1]) */
static int *weight_state = NULL;
static double *weight_value = NULL;
static unsigned char *cue_word_end = NULL; /* the cue's last character is a word character */
static Py_ssize_t n_nodes = 0;
static unsigned char trie_symbol[256];   /* a cue-view byte's column in trie_children, 0 for no cue character */
static int16_t *trie_children = NULL;    /* [node][32]: the child on each column, 0 for none */
static int32_t *trie_cue = NULL;         /* [node]: the cue ending there, -1 for none */
static int16_t trie_depth2[32 * 32];     /* [column][column]: the node of a two-character prefix, 0 for none */
static unsigned char in_word[256];
static unsigned char cue_view_table[256];
static double tie[N_STATES];
static PyObject *singles[N_STATES];
static PyObject *pairs[N_STATES][N_STATES];
static PyObject *fallback = NULL;
static int first_state, last_state, verify_state, retrieval_state;
static double first_weight, last_weight, question_weight, entity_weight, entity_cap, second_min, second_ratio,
    fallback_below;

/* Character classes of the entity cues (rules._ENTITY_RE), 3 bits each; every non-ASCII character is "other". */
enum { C_OTHER = 0, C_LOWER, C_UPPER, C_DIGIT, C_PUNCT, C_SPACE };
static unsigned char char_class[256];
/* entity_ends[h]: h, the classes of the last 4 characters (the newest in the low bits; other before the
 * span), ends a match of rules._ENTITY_RE: "[a0,] A" then a letter (a capitalised word or acronym in
 * mid-sentence, counted at its second letter) or "00" after a non-digit (a number, at its second digit). */
#define HISTORY_MASK 07777u
static unsigned char entity_ends[HISTORY_MASK + 1];

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        char_class[c] = c >= 'a' && c <= 'z' ? C_LOWER : c >= 'A' && c <= 'Z' ? C_UPPER : c >= '0' && c <= '9' ? C_DIGIT
                      : (c == ',' || c == ';' || c == ':') ? C_PUNCT : c == ' ' ? C_SPACE : C_OTHER;
    }
    for (unsigned h = 0; h <= HISTORY_MASK; h++) {
        unsigned c0 = h >> 9 & 7, c1 = h >> 6 & 7, c2 = h >> 3 & 7, c3 = h & 7; /* oldest to newest */
        int capitalised = (c0 == C_LOWER || c0 == C_DIGIT || c0 == C_PUNCT) && c1 == C_SPACE && c2 == C_UPPER
                          && (c3 == C_LOWER || c3 == C_UPPER);
        int number = c1 != C_DIGIT && c2 == C_DIGIT && c3 == C_DIGIT;
        entity_ends[h] = (unsigned char)(capitalised || number);
    }
}

static void release(void) {
    free(weight_start); free(weight_state); free(weight_value); free(cue_word_end);
    free(trie_children); free(trie_cue);
    weight_start = NULL; weight_state = NULL; weight_value = NULL; cue_word_end = NULL;
    trie_children = NULL; trie_cue = NULL;
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

/* Copy the trie (rules._cue_trie) and check that every index in it is in range. */
static int read_trie(PyObject *trie) {
    Py_buffer symbols, children, cues, word_end;
    if (!PyArg_ParseTuple(trie, "y*y*y*y*", &symbols, &children, &cues, &word_end)) return -1;
    int ok = 0;
    n_nodes = cues.len / 4;
    if (symbols.len != 256 || n_nodes < 1 || cues.len != 4 * n_nodes || children.len != 64 * n_nodes
        || word_end.len != n_cues) {
        PyErr_SetString(PyExc_ValueError, "trie: expected 256 symbols, per node 32 int16 and an int32, per cue a byte");
        goto done;
    }
    trie_children = malloc(children.len);
    trie_cue = malloc(cues.len);
    cue_word_end = malloc(n_cues + 1);
    if (!trie_children || !trie_cue || !cue_word_end) { PyErr_NoMemory(); goto done; }
    memcpy(trie_symbol, symbols.buf, 256);
    memcpy(trie_children, children.buf, children.len);
    memcpy(trie_cue, cues.buf, cues.len);
    memcpy(cue_word_end, word_end.buf, n_cues);
    for (int c = 0; c < 256; c++)
        if (trie_symbol[c] >= 32 || (trie_symbol[c] && (in_word[c] ? c < 'a' || c > 'z' : c == '#'))) {
            PyErr_Format(PyExc_ValueError, "trie: byte %d cannot be in a cue", c);
            goto done;
        }
    for (Py_ssize_t k = 0; k < n_nodes; k++) {
        if (trie_cue[k] < -1 || trie_cue[k] >= n_cues) { PyErr_Format(PyExc_ValueError, "trie: node %zd's cue", k); goto done; }
        trie_children[32 * k] = 0; /* column 0: no cue character, no child */
        for (int c = 1; c < 32; c++)
            if (trie_children[32 * k + c] < 0 || trie_children[32 * k + c] >= n_nodes) {
                PyErr_Format(PyExc_ValueError, "trie: node %zd's children", k);
                goto done;
            }
    }
    for (int a = 0; a < 32; a++) { /* every cue has 2+ characters, so a walk can start at depth 2 */
        int16_t first = trie_children[a];
        if (first && trie_cue[first] >= 0) { PyErr_SetString(PyExc_ValueError, "trie: a one-character cue"); goto done; }
        for (int b = 0; b < 32; b++) trie_depth2[32 * a + b] = first ? trie_children[32 * first + b] : 0;
    }
    ok = 1;
done:
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&children);
    PyBuffer_Release(&cues);
    PyBuffer_Release(&word_end);
    return ok ? 0 : -1;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *weights, *trie, *tie_seq, *states, *fallback_obj;
    Py_buffer in_word_buf, cue_view_buf;
    if (!PyArg_ParseTuple(args, "OO!y*y*OOO(ididididdddd)", &weights, &PyTuple_Type, &trie, &in_word_buf,
                          &cue_view_buf, &tie_seq, &states,
                          &fallback_obj, &first_state, &first_weight, &last_state, &last_weight, &verify_state,
                          &question_weight, &retrieval_state, &entity_weight, &entity_cap, &second_min,
                          &second_ratio, &fallback_below))
        return NULL;
    release();
    PyObject *weights_fast = NULL;
    if (in_word_buf.len != 256 || cue_view_buf.len != 256) {
        PyErr_SetString(PyExc_ValueError, "in_word, cue_view_table: expected 256 bytes each");
        goto fail;
    }
    for (int c = 0; c < 256; c++) in_word[c] = ((const unsigned char *)in_word_buf.buf)[c] != 0;
    memcpy(cue_view_table, cue_view_buf.buf, 256);
    if (!PyTuple_Check(states) || PyTuple_GET_SIZE(states) != N_STATES) {
        PyErr_Format(PyExc_ValueError, "states: expected a tuple of %d names", N_STATES);
        goto fail;
    }
    int ids[4] = {first_state, last_state, verify_state, retrieval_state};
    for (int i = 0; i < 4; i++)
        if (ids[i] < 0 || ids[i] >= N_STATES) { PyErr_SetString(PyExc_ValueError, "state index out of range"); goto fail; }
    if (read_doubles(tie_seq, tie, N_STATES, "tie") < 0) goto fail;
    weights_fast = PySequence_Fast(weights, "cue_weights");
    if (weights_fast == NULL) goto fail;
    n_cues = PySequence_Fast_GET_SIZE(weights_fast);
    Py_ssize_t total = 0;
    for (Py_ssize_t c = 0; c < n_cues; c++) {
        Py_ssize_t n = PyObject_Length(PySequence_Fast_GET_ITEM(weights_fast, c));
        if (n < 0) goto fail;
        total += n;
    }
    weight_start = malloc(sizeof(Py_ssize_t) * (n_cues + 1));
    weight_state = malloc(sizeof(int) * (total + 1));
    weight_value = malloc(sizeof(double) * (total + 1));
    if (!weight_start || !weight_state || !weight_value) { PyErr_NoMemory(); goto fail; }
    Py_ssize_t w = 0;
    for (Py_ssize_t c = 0; c < n_cues; c++) {
        weight_start[c] = w;
        PyObject *pairs_c = PySequence_Fast(PySequence_Fast_GET_ITEM(weights_fast, c), "cue weights");
        if (pairs_c == NULL) goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(pairs_c); i++, w++) {
            int state;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(pairs_c, i), "id", &state, &weight_value[w])) {
                Py_DECREF(pairs_c);
                goto fail;
            }
            if (state < 0 || state >= N_STATES) {
                PyErr_SetString(PyExc_ValueError, "cue weights: state index out of range");
                Py_DECREF(pairs_c);
                goto fail;
            }
            weight_state[w] = state;
        }
        Py_DECREF(pairs_c);
    }
    weight_start[n_cues] = w;
    if (read_trie(trie) < 0) goto fail;
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
    PyBuffer_Release(&in_word_buf);
    PyBuffer_Release(&cue_view_buf);
    configured = 1;
    Py_RETURN_NONE;
fail:
    Py_XDECREF(weights_fast);
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

/* The entity and question cues of text[start:end] on its own: the matches of rules._ENTITY_RE and "?" in it.
 * One table look-up per character, no branch on the text (capitals and digits come at random). */
static void span_cues(int kind, const void *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t *n_entities,
                      int *has_question) {
    Py_ssize_t n = 0;
    unsigned history = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *t = (const Py_UCS1 *)data;
        for (Py_ssize_t i = start; i < end; i++) {
            history = (history << 3 | char_class[t[i]]) & HISTORY_MASK;
            n += entity_ends[history];
        }
        *has_question = memchr(t + start, '?', end - start) != NULL;
    } else {
        int question = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            history = (history << 3 | (ch < 256 ? char_class[ch] : C_OTHER)) & HISTORY_MASK;
            n += entity_ends[history];
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

/* v[0:n] = the cue view of text (rules._cue_view, without the "#" around spans). Returns 1, 0 when some
 * character lower-cases to ASCII or to several characters, -1 on error. */
static int fill_view(int kind, const void *data, Py_ssize_t n, unsigned char *v) {
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *t = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 0; i < n; i++) v[i] = cue_view_table[t[i]];
        return 1;
    }
    /* Beyond Latin-1, str.lower() is asked once per character of the Basic Multilingual Plane and the answer
     * kept (0: not asked yet), so that a thinking in Chinese costs a table look-up per character. */
    static signed char bmp_view[0x10000];
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        int byte;
        if (ch < 256) byte = cue_view_table[ch];
        else if (ch < 0x10000 && bmp_view[ch]) byte = bmp_view[ch];
        else {
            byte = wide_cue_view_byte(ch);
            if (byte == -2) return -1;
            if (ch < 0x10000) bmp_view[ch] = (signed char)byte;
        }
        if (byte < 0) return 0;
        v[i] = (unsigned char)byte;
    }
    return 1;
}

/* Add the weights of the cues in v[start:end] to s: from each word start, the longest cue of the trie
 * that ends on a boundary; the next search starts at its end (leftmost-longest, non-overlapping, as
 * rules._CUE_RE). v[start - 1] and v[end] are "#", a byte no cue contains, so no walk leaves the span.
 * The word starts of 64 characters at a time are found without a branch on the text, as a bit mask. */
static void add_cues(const unsigned char *v, Py_ssize_t start, Py_ssize_t end, double *s) {
    Py_ssize_t resume = start; /* the end of the last cue: no cue starts before it */
    for (Py_ssize_t base = start; base < end; base += 64) {
        Py_ssize_t stop = end - base < 64 ? end : base + 64;
        uint64_t word_starts = 0;
        for (Py_ssize_t i = base; i < stop; i++)
            word_starts |= (uint64_t)(in_word[v[i]] & !in_word[v[i - 1]]) << (i - base);
        for (; word_starts; word_starts &= word_starts - 1) {
            Py_ssize_t i = base + ctz64(word_starts), j = i + 1; /* v[i + 1]: at most the "#" at v[end] */
            if (i < resume) continue;
            int32_t best = -1;
            int node = trie_depth2[32 * trie_symbol[v[i]] + trie_symbol[v[j]]]; /* the cue prefix v[i:j + 1] */
            while (node) {
                j++;
                int32_t cue = trie_cue[node];
                if (cue >= 0 && !(cue_word_end[cue] && in_word[v[j]])) { best = cue; resume = j; }
                node = trie_children[32 * node + trie_symbol[v[j]]];
            }
            if (best >= 0)
                for (Py_ssize_t w = weight_start[best]; w < weight_start[best + 1]; w++) s[weight_state[w]] += weight_value[w];
        }
    }
}

static PyObject *tag(PyObject *self, PyObject *args) {
    PyObject *text, *spans;
    Py_ssize_t position, n_paragraphs;
    if (!PyArg_ParseTuple(args, "UOnn", &text, &spans, &position, &n_paragraphs)) return NULL;
    if (!configured) { PyErr_SetString(PyExc_RuntimeError, "configure() first"); return NULL; }
    PyObject *spans_fast = PySequence_Fast(spans, "spans"), *out = NULL;
    if (spans_fast == NULL) return NULL;
    Py_ssize_t n_spans = PySequence_Fast_GET_SIZE(spans_fast), k;
    Py_ssize_t text_len = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    double *scores = malloc(sizeof(double) * N_STATES * (n_spans + 1));
    Py_ssize_t *bounds = malloc(sizeof(Py_ssize_t) * 2 * (n_spans + 1));
    unsigned char *v = malloc(text_len + 1);
    if (scores == NULL || bounds == NULL || v == NULL) { PyErr_NoMemory(); goto done; }
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
    }
    int filled = fill_view(kind, data, text_len, v);
    if (filled <= 0) {
        if (filled == 0) { out = Py_None; Py_INCREF(out); }
        goto done;
    }
    for (k = 0; k < n_spans; k++) v[bounds[2 * k] - 1] = v[bounds[2 * k + 1]] = '#'; /* each span seen alone */
    out = PyList_New(n_spans);
    if (out == NULL) goto done;
    /* Per span, in the order of rules._tag_spans_py: the cues, the position, question and entity cues, the states. */
    for (k = 0; k < n_spans; k++, position++) {
        double *s = scores + N_STATES * k;
        Py_ssize_t n_entities;
        int question;
        memcpy(s, tie, sizeof(tie));
        add_cues(v, bounds[2 * k], bounds[2 * k + 1], s);
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
    free(v);
    Py_DECREF(spans_fast);
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Load the cue trie and weights, states and constants of rules.py."},
    {"tag", tag, METH_VARARGS, "States of each span of text (see rules._tag_spans_py), or None: take the reference path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rules_c", "The rules tagger, compiled.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rules_c(void) {
    init_classes();
    return PyModule_Create(&module);
}
