/* Counting o200k_base tokens in ~3.4 MB instead of quicktok's ~56.
 *
 * An exact count is the pre-tokenizer's pieces (tiktoken's o200k pattern, matched by hand
 * below), each cut by byte-pair merging into tokens of the vocabulary. What it holds: the
 * vocabulary's bytes in one block, an open-addressing hash table whose 8-byte slots say where
 * a token's bytes are, how many, its rank and a tag of its hash (so a lookup touches its slot
 * and, only when length and tag agree, the bytes: two cache lines), and the pattern's
 * character classes as a two-stage table. Built from bytes the
 * Python side reads (quicktok's o200k.vocab, gatehouse/quota/o200k_classes.bin).
 *
 * Counter(vocab: bytes, classes: bytes); Counter.count(text: str) -> int. The count never
 * holds the GIL's callers longer than the text's length asks (merging is O(n log n) in a
 * piece's bytes, so one long run of punctuation is no worse than many short words).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define C_L 1   /* \p{L} */
#define C_N 2   /* \p{N} */
#define C_UP 4  /* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] */
#define C_LO 8  /* [\p{Ll}\p{Lm}\p{Lo}\p{M}] */
#define C_WS 16 /* \s */
#define NONE ((size_t)-1)
#define NO_RANK UINT32_MAX
/* A piece longer than this (a run of 64 KiB of one class, e.g. punctuation) is merged in parts
 * of this size, so that what one call holds is bounded (~1.3 MB): its count may then be a
 * token more per part than tiktoken's. */
#define MAX_PIECE 65536

typedef struct {
    PyObject_HEAD
    uint8_t *blob;      /* every token's bytes, one after another */
    size_t blob_size;
    uint64_t *slots;    /* hash table of SLOT()s; 0 is empty */
    uint32_t mask;      /* slots - 1 */
    uint32_t n;
    uint32_t longest;   /* the longest token's bytes: a longer pair is none */
    uint16_t *stage1;   /* code point >> 8 -> block */
    uint8_t *stage2;    /* block * 256 + (code point & 255) -> class bits */
} Counter;

static inline uint32_t hash_bytes(const uint8_t *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    return h ^ (h >> 15);
}

/* A slot: the hash's top 12 bits, the rank (20 bits), the length (8), the offset (24). */
#define SLOT(tag, rank, len, at) \
    (((uint64_t)(tag) << 52) | ((uint64_t)(rank) << 32) | ((uint64_t)(len) << 24) | (at))
#define MAX_RANK 0xFFFFF
#define MAX_BLOB 0xFFFFFF
#define MAX_LEN 0xFF /* bytes a token; o200k's longest is 128 */

static inline int same(const uint8_t *a, const uint8_t *b, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* The slot holding these bytes, or NULL. */
static inline const uint64_t *find(const Counter *c, const uint8_t *s, size_t len) {
    uint32_t h = hash_bytes(s, len), i = h & c->mask;
    uint64_t want = SLOT(h >> 20, 0, len, 0), mask = SLOT(0xFFF, 0, MAX_LEN, 0);
    for (;;) {
        uint64_t v = c->slots[i];
        if (!v) return NULL;
        if ((v & mask) == want && same(c->blob + (v & MAX_BLOB), s, len)) return &c->slots[i];
        i = (i + 1) & c->mask;
    }
}

static inline uint32_t lookup(const Counter *c, const uint8_t *s, size_t len) {
    if (len > c->longest) return NO_RANK;
    const uint64_t *slot = find(c, s, len);
    return slot ? (uint32_t)((*slot >> 32) & MAX_RANK) : NO_RANK;
}

/* -- the pre-tokenizer ----------------------------------------------------------------- */

typedef struct {
    const Counter *c;
    const uint8_t *s;
    size_t n;
} Text;

/* The code point at byte i of valid UTF-8 (surrogates encoded as three bytes included). */
static inline uint32_t decode(const Text *t, size_t i, size_t *len) {
    const uint8_t *s = t->s + i;
    if (s[0] < 0x80) { *len = 1; return s[0]; }
    if (s[0] < 0xE0) { *len = 2; return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); }
    if (s[0] < 0xF0) {
        *len = 3;
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

static inline uint8_t klass(const Text *t, uint32_t cp) {
    if (cp > 0x10FFFF) return 0;
    return t->c->stage2[((size_t)t->c->stage1[cp >> 8] << 8) | (cp & 0xFF)];
}

/* [^\r\n\p{L}\p{N}] */
static inline int is_prefix(uint32_t cp, uint8_t k) {
    return cp != '\r' && cp != '\n' && !(k & (C_L | C_N));
}

/* [^\s\p{L}\p{N}] */
static inline int is_other(uint8_t k) { return !(k & (C_WS | C_L | C_N)); }

/* UP* LO+ at j, with the pattern's backtracking: the end, or NONE. */
static size_t upper_lower(const Text *t, size_t j) {
    size_t p = j, len, last_lower_end = NONE;
    while (p < t->n) {
        uint8_t k = klass(t, decode(t, p, &len));
        if (!(k & C_UP)) break;
        p += len;
        if (k & C_LO) last_lower_end = p;
    }
    if (p < t->n && (klass(t, decode(t, p, &len)) & C_LO)) {
        while (p < t->n && (klass(t, decode(t, p, &len)) & C_LO)) p += len;
        return p;
    }
    /* UP* gives back what it took until LO+ can start: at the last "lower" it ate, which
     * then ends there (what follows it in the run is upper only) */
    return last_lower_end;
}

/* UP+ LO* at j: the end, or NONE. */
static size_t upper_then_lower(const Text *t, size_t j) {
    size_t p = j, len;
    while (p < t->n && (klass(t, decode(t, p, &len)) & C_UP)) p += len;
    if (p == j) return NONE;
    while (p < t->n && (klass(t, decode(t, p, &len)) & C_LO)) p += len;
    return p;
}

static inline int folds_to(uint32_t cp, char lower) {
    return cp == (uint32_t)lower || cp == (uint32_t)(lower - 32) ||
           (lower == 's' && cp == 0x17F); /* LATIN SMALL LETTER LONG S folds to s */
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)? after a word ending at e. */
static size_t contraction(const Text *t, size_t e) {
    if (e + 1 >= t->n || t->s[e] != '\'') return e;
    size_t len, len2;
    uint32_t a = decode(t, e + 1, &len);
    if (folds_to(a, 's') || folds_to(a, 't') || folds_to(a, 'm') || folds_to(a, 'd'))
        return e + 1 + len;
    if (e + 1 + len < t->n) {
        uint32_t b = decode(t, e + 1 + len, &len2);
        if (((folds_to(a, 'r') || folds_to(a, 'v')) && folds_to(b, 'e')) ||
            (folds_to(a, 'l') && folds_to(b, 'l')))
            return e + 1 + len + len2;
    }
    return e;
}

/* The end of the piece that starts at byte i: the first of the pattern's alternatives that
 * matches there, each with the backtracking a regular-expression engine would do. */
static size_t piece_end(const Text *t, size_t i) {
    size_t l0, len, e;
    uint32_t c0 = decode(t, i, &l0);
    uint8_t k0 = klass(t, c0);
    int prefix = is_prefix(c0, k0);
    /* [^\r\n\p{L}\p{N}]?[UP]*[LO]+(contraction)? */
    if (prefix && (e = upper_lower(t, i + l0)) != NONE) return contraction(t, e);
    if ((e = upper_lower(t, i)) != NONE) return contraction(t, e);
    /* [^\r\n\p{L}\p{N}]?[UP]+[LO]*(contraction)? */
    if (prefix && (e = upper_then_lower(t, i + l0)) != NONE) return contraction(t, e);
    if ((e = upper_then_lower(t, i)) != NONE) return contraction(t, e);
    /* \p{N}{1,3} */
    if (k0 & C_N) {
        size_t p = i + l0;
        for (int more = 2; more && p < t->n && (klass(t, decode(t, p, &len)) & C_N); more--)
            p += len;
        return p;
    }
    /* ' '?[^\s\p{L}\p{N}]+[\r\n/]* */
    size_t p = NONE;
    if (c0 == ' ' && i + 1 < t->n && is_other(klass(t, decode(t, i + 1, &len))))
        p = i + 1;
    else if (is_other(k0))
        p = i;
    if (p != NONE) {
        while (p < t->n && is_other(klass(t, decode(t, p, &len)))) p += len;
        while (p < t->n && (t->s[p] == '\r' || t->s[p] == '\n' || t->s[p] == '/')) p++;
        return p;
    }
    /* c0 is white space here: \s*[\r\n]+ | \s+(?!\S) | \s+ */
    size_t q = i, last_newline_end = NONE, last_start = i;
    while (q < t->n) {
        uint32_t cp = decode(t, q, &len);
        if (!(klass(t, cp) & C_WS)) break;
        last_start = q;
        q += len;
        if (cp == '\r' || cp == '\n') last_newline_end = q;
    }
    if (last_newline_end != NONE) return last_newline_end;
    if (q == t->n || last_start == i) return q;
    return last_start; /* leave the last space to the word after it */
}

/* -- byte-pair merging ----------------------------------------------------------------- */

/* A heap entry: a pair's rank above the start of its left part, so that one comparison
 * orders by rank, then leftmost first. */
typedef uint64_t Entry;
#define ENTRY(rank, start) (((uint64_t)(rank) << 32) | (uint32_t)(start))

static void push(Entry *heap, size_t *size, Entry e) {
    size_t i = (*size)++;
    while (i) {
        size_t parent = (i - 1) / 2;
        if (heap[parent] <= e) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = e;
}

static Entry pop(Entry *heap, size_t *size) {
    Entry top = heap[0], last = heap[--*size];
    size_t i = 0, n = *size;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        child += child + 1 < n && heap[child + 1] < heap[child];
        if (last <= heap[child]) break;
        heap[i] = heap[child];
        i = child;
    }
    if (n) heap[i] = last;
    return top;
}

/* How many tokens the piece s[0..len) merges into: tiktoken's rule (merge the adjacent pair
 * whose joined bytes rank lowest, the leftmost of equals, until no pair is a token), with a
 * heap of pairs and stale entries skipped. next/prev are indexed by a part's first byte. */
#define SHORT 24

/* merge_count for a piece of at most SHORT bytes: tiktoken's own way, a scan of the pairs for
 * the lowest rank at each merge (cheaper than a heap at this size). */
static Py_ssize_t merge_count_short(const Counter *c, const uint8_t *s, size_t len) {
    uint32_t start[SHORT + 1], rank[SHORT];
    size_t parts = len;
    for (size_t i = 0; i <= len; i++) start[i] = (uint32_t)i;
    for (size_t i = 0; i + 1 < len; i++) rank[i] = lookup(c, s + i, 2);
    rank[len - 1] = NO_RANK;
    for (;;) {
        uint32_t best = NO_RANK;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++)
            if (rank[i] < best) { best = rank[i]; at = i; }
        if (best == NO_RANK) break;
        /* part at+1 joins part at */
        memmove(start + at + 1, start + at + 2, sizeof(uint32_t) * (parts - at - 1));
        memmove(rank + at + 1, rank + at + 2, sizeof(uint32_t) * (parts - at - 2));
        parts--;
        rank[at] = at + 1 < parts ? lookup(c, s + start[at], start[at + 2] - start[at]) : NO_RANK;
        if (at) rank[at - 1] = lookup(c, s + start[at - 1], start[at + 1] - start[at - 1]);
    }
    return (Py_ssize_t)parts;
}

static Py_ssize_t merge_count(const Counter *c, const uint8_t *s, size_t len) {
    if (len <= 1) return (Py_ssize_t)len;
    if (lookup(c, s, len) != NO_RANK) return 1;
    if (len <= SHORT) return merge_count_short(c, s, len);
    uint32_t small[3 * 65];
    Entry small_heap[2 * 64]; /* the len - 1 first pairs, and one more at most per merge */
    uint32_t *buf = small;
    Entry *heap = small_heap;
    if (len > 64) {
        buf = malloc(sizeof(uint32_t) * 3 * (len + 1));
        heap = malloc(sizeof(Entry) * 2 * len);  /* see small_heap */
        if (!buf || !heap) {
            free(buf == small ? NULL : buf);
            free(heap == small_heap ? NULL : heap);
            PyErr_NoMemory();
            return -1;
        }
    }
    /* next[i]: the start of the part after the one starting at i (len at the last);
     * prev[i]: the start of the part before; rank[i]: the rank of part i joined to the next */
    uint32_t *next = buf, *prev = buf + (len + 1), *pair = buf + 2 * (len + 1);
    size_t size = 0, parts = len;
    for (size_t i = 0; i < len; i++) {
        next[i] = (uint32_t)(i + 1);
        prev[i] = i ? (uint32_t)(i - 1) : UINT32_MAX;
        pair[i] = i + 1 < len ? lookup(c, s + i, 2) : NO_RANK;
        if (pair[i] != NO_RANK) push(heap, &size, ENTRY(pair[i], i));
    }
    while (size) {
        Entry e = pop(heap, &size);
        uint32_t i = (uint32_t)e;
        if (pair[i] != (uint32_t)(e >> 32)) continue; /* stale: that pair has changed */
        uint32_t j = next[i], after = next[j]; /* join part i and part j */
        next[i] = after;
        if (after < len) prev[after] = i;
        pair[j] = NO_RANK;
        parts--;
        pair[i] = after < len ? lookup(c, s + i, next[after] - i) : NO_RANK;
        if (pair[i] != NO_RANK) push(heap, &size, ENTRY(pair[i], i));
        if (prev[i] != UINT32_MAX) {
            uint32_t h = prev[i];
            pair[h] = lookup(c, s + h, after - h);
            if (pair[h] != NO_RANK) push(heap, &size, ENTRY(pair[h], h));
        }
    }
    if (buf != small) { free(buf); free(heap); }
    return (Py_ssize_t)parts;
}

/* -- the Python type ------------------------------------------------------------------- */

static void Counter_dealloc(Counter *self) {
    free(self->blob); free(self->slots);
    free(self->stage1); free(self->stage2);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline uint32_t u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int load_vocab(Counter *self, const uint8_t *v, size_t size) {
    if (size < 4) goto bad;
    uint32_t n = u32(v);
    if (n == 0 || n > 4000000) goto bad;
    size_t total = 0, p = 4;
    for (uint32_t i = 0; i < n; i++) { /* first pass: the sizes */
        if (p + 2 > size) goto bad;
        size_t len = v[p] | (v[p + 1] << 8);
        if (len == 0 || len > MAX_LEN || p + 2 + len + 4 > size) goto bad;
        total += len;
        if (len > self->longest) self->longest = (uint32_t)len;
        p += 2 + len + 4;
    }
    if (p != size || total > MAX_BLOB) goto bad;
    uint32_t slots = 1;
    /* at most 80 % full: o200k's 200,000 tokens in 2^18 slots, 2 MB. Half full (2^19) made
     * counting ~7 % quicker (bench/tokenizer.py: 28 against 30 µs for 1,000 tokens) for 2 MB
     * more in every worker. Always more slots than tokens: a lookup that misses stops at an
     * empty slot, and a full table (a vocabulary of 1 or 2 tokens) would have none. */
    while (slots <= n + n / 4) slots <<= 1;
    self->blob = malloc(total);
    self->slots = calloc(slots, sizeof(uint64_t));
    if (!self->blob || !self->slots) {
        PyErr_NoMemory();
        return -1;
    }
    self->blob_size = total;
    self->n = n;
    self->mask = slots - 1;
    p = 4;
    uint32_t at = 0;
    for (uint32_t t = 0; t < n; t++) {
        size_t len = v[p] | (v[p + 1] << 8);
        uint32_t rank = u32(v + p + 2 + len);
        if (rank > MAX_RANK) goto bad;
        memcpy(self->blob + at, v + p + 2, len);
        if (find(self, self->blob + at, len)) goto bad; /* a token twice */
        uint32_t h = hash_bytes(self->blob + at, len), i = h & self->mask;
        while (self->slots[i]) i = (i + 1) & self->mask;
        self->slots[i] = SLOT(h >> 20, rank, len, at);
        at += (uint32_t)len;
        p += 2 + len + 4;
    }
    for (uint32_t b = 0; b < 256; b++) { /* every byte must be a token, or counts are wrong */
        uint8_t one = (uint8_t)b;
        if (lookup(self, &one, 1) == NO_RANK) goto bad;
    }
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "not a vocabulary this counter reads");
    return -1;
}

static int load_classes(Counter *self, const uint8_t *d, size_t size) {
    if (size < 4) goto bad;
    uint32_t runs = u32(d);
    if (runs == 0 || (size - 4) / 5 != runs || (size - 4) % 5) goto bad;
    uint8_t *flat = malloc(0x110000);
    if (!flat) { PyErr_NoMemory(); return -1; }
    for (uint32_t r = 0; r < runs; r++) {
        uint32_t first = u32(d + 4 + 5 * r);
        uint32_t end = r + 1 < runs ? u32(d + 4 + 5 * (r + 1)) : 0x110000;
        if (first >= end || end > 0x110000 || (r == 0 && first != 0)) { free(flat); goto bad; }
        memset(flat + first, d[4 + 5 * r + 4], end - first);
    }
    /* two stages: blocks of 256 code points, the same block stored once */
    self->stage1 = malloc(sizeof(uint16_t) * (0x110000 >> 8));
    self->stage2 = malloc(0x110000);
    if (!self->stage1 || !self->stage2) { free(flat); PyErr_NoMemory(); return -1; }
    size_t blocks = 0;
    for (size_t b = 0; b < (0x110000 >> 8); b++) {
        size_t found = blocks;
        for (size_t o = 0; o < blocks; o++)
            if (memcmp(self->stage2 + (o << 8), flat + (b << 8), 256) == 0) { found = o; break; }
        if (found == blocks) memcpy(self->stage2 + (blocks++ << 8), flat + (b << 8), 256);
        self->stage1[b] = (uint16_t)found;
    }
    free(flat);
    uint8_t *shrunk = realloc(self->stage2, blocks << 8);
    if (shrunk) self->stage2 = shrunk;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "not a class table this counter reads");
    return -1;
}

static int Counter_init(Counter *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"vocab", "classes", NULL};
    Py_buffer vocab, classes;
    if (self->blob) {
        PyErr_SetString(PyExc_RuntimeError, "a Counter is loaded once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", names, &vocab, &classes)) return -1;
    int rc = load_vocab(self, vocab.buf, (size_t)vocab.len);
    if (rc == 0) rc = load_classes(self, classes.buf, (size_t)classes.len);
    PyBuffer_Release(&vocab);
    PyBuffer_Release(&classes);
    return rc;
}

static PyObject *Counter_count(Counter *self, PyObject *arg) {
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "count() takes a str");
        return NULL;
    }
    if (!self->stage2) {
        PyErr_SetString(PyExc_RuntimeError, "the Counter is not loaded");
        return NULL;
    }
    Py_ssize_t size;
    PyObject *encoded = NULL;
    const char *utf8 = PyUnicode_AsUTF8AndSize(arg, &size);
    if (!utf8) { /* a lone surrogate: counted as U+FFFD, as tiktoken's encode does */
        PyErr_Clear();
        PyObject *wide = PyUnicode_AsEncodedString(arg, "utf-16", "surrogatepass");
        PyObject *mended = wide ? PyUnicode_Decode(PyBytes_AS_STRING(wide),
                                                  PyBytes_GET_SIZE(wide), "utf-16", "replace")
                                : NULL;
        Py_XDECREF(wide);
        encoded = mended ? PyUnicode_AsUTF8String(mended) : NULL;
        Py_XDECREF(mended);
        if (!encoded) return NULL;
        utf8 = PyBytes_AS_STRING(encoded);
        size = PyBytes_GET_SIZE(encoded);
    }
    Text t = {self, (const uint8_t *)utf8, (size_t)size};
    Py_ssize_t total = 0;
    for (size_t i = 0; i < t.n;) {
        size_t e = piece_end(&t, i);
        while (i < e) {
            size_t part = e - i;
            if (part > MAX_PIECE) { /* cut between two characters */
                part = MAX_PIECE;
                while ((t.s[i + part] & 0xC0) == 0x80) part--;
            }
            Py_ssize_t got = merge_count(self, t.s + i, part);
            if (got < 0) { Py_XDECREF(encoded); return NULL; }
            total += got;
            i += part;
        }
    }
    Py_XDECREF(encoded);
    return PyLong_FromSsize_t(total);
}

static PyObject *Counter_pieces(Counter *self, PyObject *arg) {
    /* The pre-tokenizer's pieces of a str, for tests: a list of str. */
    if (!PyUnicode_Check(arg) || !self->stage2) {
        PyErr_SetString(PyExc_TypeError, "pieces() takes a str, on a loaded Counter");
        return NULL;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(arg, &size);
    if (!utf8) return NULL;
    Text t = {self, (const uint8_t *)utf8, (size_t)size};
    PyObject *out = PyList_New(0);
    for (size_t i = 0; out && i < t.n;) {
        size_t e = piece_end(&t, i);
        PyObject *piece = PyUnicode_DecodeUTF8(utf8 + i, (Py_ssize_t)(e - i), "strict");
        if (!piece || PyList_Append(out, piece) < 0) Py_CLEAR(out);
        Py_XDECREF(piece);
        i = e;
    }
    return out;
}

static PyObject *Counter_nbytes(Counter *self, PyObject *Py_UNUSED(ignored)) {
    /* What the counter holds, in bytes. */
    size_t blocks = 0;
    if (self->stage1)
        for (size_t b = 0; b < (0x110000 >> 8); b++)
            if (self->stage1[b] + 1u > blocks) blocks = self->stage1[b] + 1u;
    size_t total = self->blob_size + (self->slots ? sizeof(uint64_t) * (self->mask + 1) : 0) +
                   sizeof(uint16_t) * (0x110000 >> 8) + (blocks << 8);
    return PyLong_FromSize_t(total);
}

static PyMethodDef Counter_methods[] = {
    {"count", (PyCFunction)Counter_count, METH_O, "The number of o200k_base tokens in a str."},
    {"pieces", (PyCFunction)Counter_pieces, METH_O, "The pre-tokenizer's pieces of a str."},
    {"nbytes", (PyCFunction)Counter_nbytes, METH_NOARGS, "The bytes the counter holds."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gatehouse.quota._o200k.Counter",
    .tp_basicsize = sizeof(Counter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Counter(vocab, classes): exact o200k_base token counts.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Counter_init,
    .tp_dealloc = (destructor)Counter_dealloc,
    .tp_methods = Counter_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_o200k", "Exact o200k_base token counts in little memory.", -1, NULL,
};

PyMODINIT_FUNC PyInit__o200k(void) {
    if (PyType_Ready(&CounterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(&CounterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
