/*
 * json: the payload codec, Lua value <-> JSON text (RFC 8259).
 *
 * The only JSON code of the project.  Job payloads are encoded with
 * json_encode before they are stored (PostgreSQL jsonb, SQLite) and decoded
 * with json_decode before they are handed to Lua listeners.  Both directions
 * are iterative (no C recursion), keep no global mutable state (any number of
 * lua_States may use them at once) and allocate only through `buf` (the
 * output) and the Lua allocator (tables, strings, scratch userdata), so a
 * Lua error never leaks memory.
 */
#ifndef SCHEDULER_JSON_H
#define SCHEDULER_JSON_H

#include <lua.h>

#include "buf.h"

/* Deepest nesting of arrays/objects accepted in either direction: a value
   with JSON_MAX_DEPTH nested tables is fine, one more level is refused with
   "nesting deeper than 20000 levels". */
#define JSON_MAX_DEPTH 20000

/* Deepest nesting of a payload json_encode_depth stores (schedule,
   schedule_many, cron): one rule on both backends.  PostgreSQL's jsonb parser
   recurses and refuses about 14,500 levels at the default max_stack_depth
   (2MB), where SQLite stored up to JSON_MAX_DEPTH; 10,000 is what the specs
   round-trip on both.  Decoding keeps JSON_MAX_DEPTH, so a deeper payload
   stored before (or by SQL) still reads. */
#define JSON_PAYLOAD_MAX_DEPTH 10000

/* Flags reported by json_encode. */
#define JSON_HAS_NUL 1 /* some string or key contained a NUL byte (\u0000) */

/*
 * json_encode: append the JSON text of the Lua value at stack index idx to
 * `out` and return the JSON_* flags above (>= 0).  The Lua stack is left as
 * it was.  Rules (a contract other code and tests rely on):
 *   - nil -> null; true/false.
 *   - integers -> exact decimal (full int64 range).  Floats -> a text that
 *     decodes back to the same float and still reads as a float: integral
 *     floats with |x| < 2^64 are written as all their digits plus ".0"
 *     (1.0 -> "1.0", 1e18 -> "1000000000000000000.0", never "1e+18",
 *     because PostgreSQL jsonb rewrites 1e+18 as an integer); -0.0 is
 *     written "0.0", because jsonb has no negative zero and both backends
 *     must return the same payload;
 *     others use the shortest of %.15g, %.16g, %.17g that round-trips
 *     ("0.1", "1e+300", "4.94065645841247e-324").  The decimal point is
 *     always '.', whatever the C locale.  NaN and +-inf raise.
 *   - strings and keys must be valid UTF-8 (no overlongs, surrogates or
 *     code points > U+10FFFF); '"', '\' and bytes < 0x20 are escaped
 *     (\n \t \r \b \f, else \u00XX; NUL -> \u0000 and JSON_HAS_NUL is
 *     reported); '/' and non-ASCII are copied as is.
 *   - tables (metatables ignored, raw access): empty -> {}; all keys positive
 *     integers -> array written from 1 to the largest key with null in the
 *     holes, refused as sparse when largest key > 2 * count and > 16; all
 *     keys strings -> object (key order is lua_next order).  Anything else
 *     raises.
 *   - functions, userdata, light userdata and threads raise.
 * Errors are raised with lua_error (longjmp; `out` keeps what was appended
 * so far and its owner resets it), with a short message naming where, built
 * from `root` (e.g. "payload"; NULL means "value"):
 *   "payload.user.tags[3]: cannot encode a function"
 *   "payload.self: cyclic table (refers back to payload)"
 *   "payload.x: table mixes array items and string keys"
 *   "payload[2]: table key 1.5 is not a string or a positive integer"
 *   "payload.a: sparse array (key 1000 of 3 items)"
 *   "payload.n: cannot encode NaN or infinity"
 *   "payload.s: string is not valid UTF-8"
 *   "payload: table key is not valid UTF-8"
 *   "payload[1][1][1][1]...(19992 more)...[1][1][1][1]: nesting deeper than
 *    20000 levels"
 * Identifier-like keys print as .key, others as ["key"] (escaped, cut after
 * 40 bytes with "..."), array items as [i]; paths deeper than 10 levels are
 * elided in the middle as above.  When `out` cannot grow the error message
 * is "not enough memory"; a Lua allocation failure raises the usual Lua
 * memory error.
 */
int json_encode(lua_State *L, int idx, buf *out, const char *root);

/* json_encode refusing nesting deeper than max_depth (<= JSON_MAX_DEPTH)
 * levels: "payload[1]...: nesting deeper than 10000 levels". */
int json_encode_depth(lua_State *L, int idx, buf *out, const char *root, int max_depth);

/*
 * json_decode: decode the JSON text s[0..len) (need not be NUL-terminated;
 * leading/trailing JSON whitespace allowed; the top level may be any value).
 * On success pushes the value and returns 1.  On malformed input pushes one
 * string, "invalid JSON at byte N: <reason>" (N = 0-based offset of the
 * offending byte, e.g. "invalid JSON at byte 7: expected ',' or '}'"), and
 * returns 0.  Nothing else is left on the stack in either case.  Never
 * raises, except Lua memory errors.  Mapping:
 *   - objects -> tables with string keys; a member whose value is null is
 *     absent; with duplicate keys the last non-null value wins.
 *   - arrays -> tables with items at 1..n; null items are holes.
 *   - numbers: integer syntax (no fraction, no exponent) that fits in int64
 *     -> Lua integer; anything else -> float, correctly rounded and
 *     independent of the C locale ("1.0" -> float 1.0, "-0.0" -> -0.0,
 *     "1e400" is refused as out of range, "1e-400" -> 0.0).
 *   - strings: all escapes, \uXXXX surrogate pairs -> UTF-8, \u0000 -> NUL.
 * Refused: invalid UTF-8 anywhere in strings, lone surrogates, raw control
 * characters in strings, leading zeros, "+1", ".5", "1.", NaN/Infinity,
 * comments, trailing commas, trailing garbage, single quotes, and nesting
 * deeper than JSON_MAX_DEPTH.
 */
int json_decode(lua_State *L, const char *s, size_t len);

#endif
