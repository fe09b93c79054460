//! Size checks that run before a Rhai built-in allocates, so one call cannot take a run past its
//! memory limit before the next per-operation check sees it.
//!
//! The per-operation check (`on_progress`) reads what the thread holds *between* operations.
//! One built-in can allocate far more than that in a single call: `s.replace("a", s)` squares a
//! string's length, so three such calls asked for a terabyte at once and aborted the process;
//! a map holding one shared multi-MiB string under thousands of keys costs almost nothing until
//! it is formatted or serialised, when every copy is written out. So the built-ins that can grow
//! a value past a small multiple of their inputs are shadowed here by functions with the same
//! signatures (functions registered on the engine are found before the standard packages'). Each
//! works out the size of its result first, without allocating, and refuses past what the run
//! has left of `memory_bytes`; only then does it do what the built-in does.
//!
//! Formatting (`to_string`, `to_debug`, `print`, `debug`, and so interpolation and `+` with a
//! non-string) cannot fail towards the script: Rhai swallows an error there and formats the
//! value itself, unchecked. A refused formatting therefore returns an empty string and leaves
//! the refusal on the run, which the next operation's check (or the end of the run) turns into
//! `memory_limit`.
//!
//! Rhai's own size limits on strings, arrays and maps are off (they are checked after a value
//! is made, and a failed check while formatting made Rhai format the value unchecked), so the
//! checks they made before allocating (`blob(n)`, array and blob `pad`) are made here too.
//! What is not shadowed returns at most a small multiple of what it is given, which the script
//! already holds: joining arrays or blobs, copying a value, changing a string's case.

use std::fmt;
use std::io;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, Position};

use super::{Stop, memory, with_run};

/// What one `Dynamic` takes inside an array or a map, beyond the heap its value points to.
const DYNAMIC: u128 = std::mem::size_of::<Dynamic>() as u128;
/// A string value's own heap block (Rhai's `ImmutableString` is a shared, counted string):
/// the count, the inline string, and the allocator's rounding.
const STRING_BLOCK: u128 = 48;
/// What a `serde_json::Value` node takes, before what it points to.
const JSON_NODE: u128 = std::mem::size_of::<serde_json::Value>() as u128;
/// What a `serde_json` object entry takes beyond its key's bytes and its value: the key's
/// `String`, and its share of the B-tree node.
const JSON_ENTRY: u128 = 64;

/// What the run in progress may still allocate: its limit minus what it holds now.
fn room() -> u128 {
    with_run(|run| {
        let held = memory::held().since(run.base).bytes;
        run.heap_limit.saturating_sub(held).max(0) as u128
    })
    .unwrap_or(u128::MAX)
}

/// The refusal, in words the run's error shows.
fn refusal(what: &str, bytes: u128, room: u128) -> String {
    format!(
        "{what} would take at least {bytes} bytes, more than the {room} bytes left of the \
         memory limit"
    )
}

/// Ends the run with `memory_limit` unless `bytes` fit in what it has left.
fn admit(what: &str, bytes: u128) -> Result<(), Box<EvalAltResult>> {
    let room = room();
    if bytes <= room {
        return Ok(());
    }
    Err(EvalAltResult::ErrorTerminated(
        Dynamic::from(Stop::Refused(refusal(what, bytes, room))),
        Position::NONE,
    )
    .into())
}

/// Leaves a refusal on the run, for a call whose errors Rhai would swallow.
fn refuse_later(message: String) {
    with_run(|run| {
        run.refused.get_or_insert(message);
    });
}

/// A sink that keeps nothing and fails once more than `room` bytes went through it: sizing a
/// value by writing it out costs no memory and stops as soon as the value is too large.
struct Tally {
    written: u128,
    room: u128,
}

impl Tally {
    fn new(room: u128) -> Self {
        Tally { written: 0, room }
    }

    fn take(&mut self, n: usize) -> bool {
        self.written += n as u128;
        self.written <= self.room
    }
}

impl fmt::Write for Tally {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.take(s.len()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl io::Write for Tally {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.take(buf.len()) {
            Ok(buf.len())
        } else {
            Err(io::Error::other("over the memory limit"))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks, by writing it to a [`Tally`], that `value` as JSON text (every shared copy written
/// out) fits in what the run has left; the result names `what`.
pub(super) fn admit_json(what: &str, value: &Dynamic) -> Result<(), Box<EvalAltResult>> {
    let room = room();
    let mut tally = Tally::new(room);
    match serde_json::to_writer(&mut tally, value) {
        Ok(()) => Ok(()),
        Err(_) => admit(what, tally.written),
    }
}

/// Checks that `value` as a `serde_json::Value` tree (what an emitted row becomes) fits in what
/// the run has left. Walks the value without allocating; the caller has bounded its depth.
pub(super) fn admit_tree(what: &str, value: &Dynamic) -> Result<(), Box<EvalAltResult>> {
    let room = room();
    let mut left = room;
    if tree_cost(value, &mut left) {
        Ok(())
    } else {
        admit(what, room.saturating_add(1))
    }
}

/// Takes `n` from `left`; false, leaving it as it was, when `left` holds less.
fn take(left: &mut u128, n: u128) -> bool {
    match left.checked_sub(n) {
        Some(rest) => {
            *left = rest;
            true
        }
        None => false,
    }
}

/// Takes from `left` what `value` costs as a JSON tree; false once it is used up.
fn tree_cost(value: &Dynamic, left: &mut u128) -> bool {
    if !take(left, JSON_NODE) {
        return false;
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return take(left, s.len() as u128);
    }
    if let Some(array) = value.read_lock::<Array>() {
        return array.iter().all(|item| tree_cost(item, left));
    }
    if let Some(blob) = value.read_lock::<rhai::Blob>() {
        // Bytes become an array of numbers.
        return take(left, blob.len() as u128 * JSON_NODE);
    }
    if let Some(map) = value.read_lock::<Map>() {
        return map
            .iter()
            .all(|(k, v)| take(left, JSON_ENTRY + k.len() as u128) && tree_cost(v, left));
    }
    if let Some(f) = value.read_lock::<FnPtr>() {
        return take(left, f.fn_name().len() as u128) && f.iter_curry().all(|v| tree_cost(v, left));
    }
    // Numbers, booleans, characters and unit are in the node; anything else becomes the short
    // name of its type.
    take(left, 64)
}

/// Formats a value with `write` if the text fits in what the run has left; else leaves the
/// refusal on the run and returns an empty string. `write` runs twice: once to size the text
/// without keeping it, once to keep it.
fn format_checked(
    what: &str,
    write: impl Fn(&mut dyn fmt::Write) -> fmt::Result,
) -> ImmutableString {
    let room = room();
    let mut tally = Tally::new(room);
    if write(&mut tally).is_err() {
        refuse_later(refusal(what, tally.written, room));
        return ImmutableString::new();
    }
    let mut text = String::with_capacity(tally.written as usize);
    // Writing into a `String` fails only if a formatting impl does, and the sizing succeeded.
    let _ = write(&mut text);
    text.into()
}

/// Registers every shadowing function on `engine`.
pub(super) fn register(engine: &mut Engine) {
    register_formatting(engine);
    register_strings(engine);
    register_concatenation(engine);
    register_splits(engine);
    register_builders(engine);
}

fn register_formatting(engine: &mut Engine) {
    // Arrays and maps format their items in debug form whichever function is called, as Rhai's
    // own functions do, and written straight from the value: a copy would cost its size again.
    for name in ["to_string", "to_debug", "print", "debug"] {
        engine
            .register_fn(name, |a: &mut Array| {
                format_checked("formatting an array", |w| write!(w, "{a:?}"))
            })
            .register_fn(name, |m: &mut Map| {
                format_checked("formatting a map", |w| write!(w, "#{m:?}"))
            });
    }
    for name in ["to_string", "print"] {
        engine.register_fn(name, |f: &mut FnPtr| {
            format_checked("formatting a function pointer", |w| write!(w, "{f}"))
        });
    }
    for name in ["to_debug", "debug"] {
        engine.register_fn(name, |f: &mut FnPtr| {
            format_checked("formatting a function pointer", |w| write!(w, "{f:?}"))
        });
    }
    engine.register_fn(
        "to_json",
        |m: &mut Map| -> Result<String, Box<EvalAltResult>> {
            let room = room();
            let mut tally = Tally::new(room);
            let map = MapJson(m);
            if serde_json::to_writer(&mut tally, &map).is_err() {
                admit("to_json", tally.written)?;
            }
            serde_json::to_string(&map).map_err(|e| {
                EvalAltResult::ErrorRuntime(format!("to_json: {e}").into(), Position::NONE).into()
            })
        },
    );
}

/// A map as a JSON object (Rhai's map keys are its own string type, which serde does not know).
struct MapJson<'a>(&'a Map);

impl serde::Serialize for MapJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// The length of `string` with every match of `find` replaced by `with_len` bytes, as
/// `str::replace` makes it (an empty `find` matches before every character and at the end).
fn replaced_len(string: &str, find: &str, with_len: usize) -> u128 {
    let matches = string.matches(find).count() as u128;
    string.len() as u128 - matches * find.len() as u128 + matches * with_len as u128
}

/// Replaces as Rhai's `replace` does, once the result is admitted.
fn replace_checked(
    string: &mut ImmutableString,
    find: &str,
    with: &str,
) -> Result<(), Box<EvalAltResult>> {
    if string.is_empty() {
        return Ok(());
    }
    let len = replaced_len(string, find, with.len());
    if len > string.len() as u128 {
        admit("replace", len + STRING_BLOCK)?;
    }
    *string = string.replace(find, with).into();
    Ok(())
}

/// Pads as Rhai's string `pad` does, once the result is admitted: `len` is in characters.
fn pad_checked(
    string: &mut ImmutableString,
    len: i64,
    padding: &str,
) -> Result<(), Box<EvalAltResult>> {
    let Ok(len) = usize::try_from(len) else {
        return Ok(());
    };
    let have = string.chars().count();
    if len <= have || padding.is_empty() {
        return Ok(());
    }
    let pad_chars = padding.chars().count();
    let missing = (len - have) as u128;
    let whole = missing / pad_chars as u128;
    let rest: usize = padding
        .chars()
        .take((missing % pad_chars as u128) as usize)
        .map(char::len_utf8)
        .sum();
    let bytes = string.len() as u128 + whole * padding.len() as u128 + rest as u128;
    admit("pad", bytes + STRING_BLOCK)?;
    let p = string.make_mut();
    let mut count = have;
    while count < len {
        if count + pad_chars <= len {
            p.push_str(padding);
            count += pad_chars;
        } else {
            p.extend(padding.chars().take(len - count));
            count = len;
        }
    }
    Ok(())
}

fn register_strings(engine: &mut Engine) {
    engine
        .register_fn(
            "replace",
            |s: &mut ImmutableString, find: &str, with: &str| replace_checked(s, find, with),
        )
        .register_fn(
            "replace",
            |s: &mut ImmutableString, find: &str, with: char| {
                replace_checked(s, find, with.encode_utf8(&mut [0; 4]))
            },
        )
        .register_fn(
            "replace",
            |s: &mut ImmutableString, find: char, with: &str| {
                replace_checked(s, find.encode_utf8(&mut [0; 4]), with)
            },
        )
        .register_fn(
            "replace",
            |s: &mut ImmutableString, find: char, with: char| {
                replace_checked(
                    s,
                    find.encode_utf8(&mut [0; 4]),
                    with.encode_utf8(&mut [0; 4]),
                )
            },
        )
        .register_fn("pad", |s: &mut ImmutableString, len: i64, with: char| {
            pad_checked(s, len, with.encode_utf8(&mut [0; 4]))
        })
        .register_fn("pad", |s: &mut ImmutableString, len: i64, with: &str| {
            pad_checked(s, len, with)
        });
}

/// What an array of `pieces` strings cut from `len` bytes takes: a `Dynamic` and a string block
/// per piece, and the bytes.
fn pieces_cost(pieces: u128, len: usize) -> u128 {
    pieces * (DYNAMIC + STRING_BLOCK) + len as u128
}

/// Splits as Rhai does (the whole string when it holds no delimiter), once the result is
/// admitted. `segments` bounds the pieces, as in `split(s, d, n)`.
fn split_checked(
    string: &ImmutableString,
    delimiter: &str,
    segments: Option<i64>,
    reverse: bool,
) -> Result<Array, Box<EvalAltResult>> {
    let whole = || Ok(vec![string.clone().into()]);
    if string.is_empty() || (!delimiter.is_empty() && !string.contains(delimiter)) {
        return whole();
    }
    let limit = match segments {
        Some(n) if n <= 1 => return whole(),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    let pieces = (string.matches(delimiter).count().saturating_add(1)).min(limit);
    admit("split", pieces_cost(pieces as u128, string.len()))?;
    let pieces: Array = match (reverse, segments.is_some()) {
        (false, false) => string.split(delimiter).map(Into::into).collect(),
        (false, true) => string.splitn(limit, delimiter).map(Into::into).collect(),
        (true, false) => string.rsplit(delimiter).map(Into::into).collect(),
        (true, true) => string.rsplitn(limit, delimiter).map(Into::into).collect(),
    };
    Ok(pieces)
}

fn register_splits(engine: &mut Engine) {
    engine
        .register_fn("to_chars", |s: &str| -> Result<Array, Box<EvalAltResult>> {
            let chars = s.chars().count() as u128;
            admit("to_chars", chars * DYNAMIC)?;
            Ok(s.chars().map(Into::into).collect())
        })
        .register_fn(
            "split",
            |s: &mut ImmutableString| -> Result<Array, Box<EvalAltResult>> {
                if s.is_empty() {
                    return Ok(vec![s.clone().into()]);
                }
                let pieces = s.split_whitespace().count() as u128;
                admit("split", pieces_cost(pieces, s.len()))?;
                Ok(s.split_whitespace().map(Into::into).collect())
            },
        )
        .register_fn("split", |s: &mut ImmutableString, d: &str| {
            split_checked(s, d, None, false)
        })
        .register_fn("split", |s: &mut ImmutableString, d: &str, n: i64| {
            split_checked(s, d, Some(n), false)
        })
        .register_fn("split", |s: &mut ImmutableString, d: char| {
            split_checked(s, d.encode_utf8(&mut [0; 4]), None, false)
        })
        .register_fn("split", |s: &mut ImmutableString, d: char, n: i64| {
            split_checked(s, d.encode_utf8(&mut [0; 4]), Some(n), false)
        })
        .register_fn("split_rev", |s: &mut ImmutableString, d: &str| {
            split_checked(s, d, None, true)
        })
        .register_fn("split_rev", |s: &mut ImmutableString, d: &str, n: i64| {
            split_checked(s, d, Some(n), true)
        })
        .register_fn("split_rev", |s: &mut ImmutableString, d: char| {
            split_checked(s, d.encode_utf8(&mut [0; 4]), None, true)
        })
        .register_fn("split_rev", |s: &mut ImmutableString, d: char, n: i64| {
            split_checked(s, d.encode_utf8(&mut [0; 4]), Some(n), true)
        });
}

/// Joins two strings once the result is admitted.
fn concat_checked(a: &str, b: &str) -> Result<ImmutableString, Box<EvalAltResult>> {
    admit(
        "joining strings",
        (a.len() + b.len()) as u128 + STRING_BLOCK,
    )?;
    let mut joined = String::with_capacity(a.len() + b.len());
    joined.push_str(a);
    joined.push_str(b);
    Ok(joined.into())
}

/// Appends `b` to `a` in place once the result is admitted.
fn append_checked(a: &mut ImmutableString, b: &str) -> Result<(), Box<EvalAltResult>> {
    if b.is_empty() {
        return Ok(());
    }
    if a.is_empty() {
        *a = b.into();
        return Ok(());
    }
    *a = concat_checked(a, b)?;
    Ok(())
}

fn register_concatenation(engine: &mut Engine) {
    // These replace Rhai's built-in operators on strings, which the engine reaches only with
    // its fast operators off (see `run_engine`). A string joined with anything else is
    // formatted first, by the functions above.
    engine
        .register_fn("+", |a: ImmutableString, b: ImmutableString| {
            if b.is_empty() {
                return Ok(a);
            }
            if a.is_empty() {
                return Ok(b);
            }
            concat_checked(&a, &b)
        })
        .register_fn("+", |a: ImmutableString, b: char| {
            concat_checked(&a, b.encode_utf8(&mut [0; 4]))
        })
        .register_fn("+", |a: char, b: ImmutableString| {
            concat_checked(a.encode_utf8(&mut [0; 4]), &b)
        });
    for name in ["+=", "append"] {
        engine
            .register_fn(name, |a: &mut ImmutableString, b: ImmutableString| {
                append_checked(a, &b)
            })
            .register_fn(name, |a: &mut ImmutableString, b: char| {
                append_checked(a, b.encode_utf8(&mut [0; 4]))
            });
    }
}

/// A length from a script, as Rhai reads it: nothing below zero.
fn wanted(len: i64) -> usize {
    usize::try_from(len).unwrap_or(0)
}

/// What a deep copy of `value` allocates, taken from `left`; false once it is used up. Strings
/// are shared, not copied; arrays, maps and blobs are copied with everything in them.
fn copy_cost(value: &Dynamic, left: &mut u128) -> bool {
    if let Some(array) = value.read_lock::<Array>() {
        return take(left, array.len() as u128 * DYNAMIC)
            && array.iter().all(|item| copy_cost(item, left));
    }
    if let Some(blob) = value.read_lock::<rhai::Blob>() {
        return take(left, blob.len() as u128);
    }
    if let Some(map) = value.read_lock::<Map>() {
        return map
            .values()
            .all(|v| take(left, JSON_ENTRY) && copy_cost(v, left));
    }
    if let Some(f) = value.read_lock::<FnPtr>() {
        return f
            .iter_curry()
            .all(|v| take(left, DYNAMIC) && copy_cost(v, left));
    }
    true
}

fn register_builders(engine: &mut Engine) {
    // Rhai's own size limits on arrays, maps and strings are off (see `RhaiRunner::run`), and
    // with them the checks these made before allocating.
    engine
        .register_fn(
            "blob",
            |len: i64| -> Result<rhai::Blob, Box<EvalAltResult>> {
                let len = wanted(len);
                admit("blob", len as u128)?;
                Ok(vec![0; len])
            },
        )
        .register_fn(
            "blob",
            |len: i64, value: i64| -> Result<rhai::Blob, Box<EvalAltResult>> {
                let len = wanted(len);
                admit("blob", len as u128)?;
                Ok(vec![(value & 0xff) as u8; len])
            },
        )
        .register_fn(
            "pad",
            |blob: &mut rhai::Blob, len: i64, value: i64| -> Result<(), Box<EvalAltResult>> {
                let len = wanted(len);
                if len > blob.len() {
                    admit("pad", len as u128)?;
                    blob.resize(len, (value & 0xff) as u8);
                }
                Ok(())
            },
        )
        .register_fn(
            "pad",
            |array: &mut Array, len: i64, item: Dynamic| -> Result<(), Box<EvalAltResult>> {
                let len = wanted(len);
                if len <= array.len() {
                    return Ok(());
                }
                let added = (len - array.len()) as u128;
                // Every copy of the item is a deep copy of it.
                let room = room();
                let mut one = room;
                let each = if copy_cost(&item, &mut one) {
                    room - one
                } else {
                    room.saturating_add(1)
                };
                admit("pad", len as u128 * DYNAMIC + added.saturating_mul(each))?;
                array.resize(len, item);
                Ok(())
            },
        )
        .register_fn(
            "to_array",
            |blob: &mut rhai::Blob| -> Result<Array, Box<EvalAltResult>> {
                admit("to_array", blob.len() as u128 * DYNAMIC)?;
                Ok(blob.iter().map(|&b| Dynamic::from_int(b.into())).collect())
            },
        );
}
