//! Rhai vessels: scripts compiled once per source hash, run on an engine kept per thread.
//!
//! Rhai's limits and callbacks are engine-wide while every run has its own limits and its own
//! collector. Building an engine per run cost more than the script itself (see BENCHMARKS.md),
//! so each vessel thread keeps one engine whose callbacks reach the run in progress through a
//! thread-local, and whose limits are set again before every run. A thread runs one vessel at a
//! time, so the two never mix.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Map, Position, Scope};

use super::memory;
use wharf_core::vessel::Payload;

mod guard;
use super::{
    CancelFlag, CodeError, Collector, FailureReason, VesselInput, VesselOutcome, VesselStatus,
};

/// Deepest nesting of expressions a script may have (checked when it is compiled).
const MAX_EXPR_DEPTH: usize = 64;
/// Deepest nesting of function calls; past it a run fails with `memory_limit`.
pub const MAX_CALL_LEVELS: usize = 48;
/// Most heap blocks a script may hold beyond its input. Each level of nesting takes at least one
/// block (an array or map level two), and Rhai's deepest walk over nested values, formatting,
/// takes about 2 KiB of stack per array or map level (1.3–1.9 KiB measured, release and debug
/// builds; a curried function pointer, one block a level, about 0.2 KiB): so a script's values
/// need at most ~100 MiB of the vessel thread's 256 MiB stack (`scheduler::pool`). A 1 MiB JSON
/// payload copied whole takes about 45,000 blocks.
pub const MAX_HELD_BLOCKS: i64 = 100_000;
/// Past this many held blocks at some point of a run, its thread is ended after the run (see
/// `memory::retire_thread`): Rhai's walks over values that deep may have touched up to ~8 MiB
/// of stack, which the thread would otherwise keep resident.
const RETIRE_AFTER_BLOCKS: i64 = 8_192;
/// Deepest nesting of a row a script emits, as for JSON bodies: rows go on to other threads,
/// whose stacks are not sized for deep values.
const MAX_ROW_DEPTH: usize = 128;
/// How many operations pass between two looks at the clock.
const CLOCK_EVERY: u64 = 1024;

static STD: LazyLock<rhai::Shared<rhai::Module>> =
    LazyLock::new(|| StandardPackage::new().as_shared_module());

/// What the engine's callbacks need of the run in progress on this thread.
struct RunState {
    collector: Collector,
    ops: u64,
    deadline: Instant,
    cancel: CancelFlag,
    /// Operations the script may take (Rhai's own count, checked here rather than by Rhai so
    /// that running out ends the run as every other stop does).
    fuel: u64,
    /// What the thread held when the script started; the script may hold `heap_limit` bytes
    /// (and [`MAX_HELD_BLOCKS`] blocks) beyond it.
    base: memory::Held,
    heap_limit: i64,
    /// The most blocks held beyond `base` at one operation.
    blocks_peak: i64,
    /// A built-in refused to allocate past the limit where Rhai lets no error through
    /// (formatting); the run ends with it at the next operation.
    refused: Option<String>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static CURRENT: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Runs `f` on the state of the run in progress, if there is one.
fn with_run<T>(f: impl FnOnce(&mut RunState) -> T) -> Option<T> {
    CURRENT.with_borrow_mut(|s| s.as_mut().map(f))
}

/// The token a run is ended with, carried by `ErrorTerminated`, which scripts cannot catch.
#[derive(Debug, Clone)]
enum Stop {
    Exit(i64),
    Fuel,
    Timeout,
    Output,
    Memory,
    Blocks,
    Cancelled,
    /// A built-in would have allocated past the memory limit; what it was, in words.
    Refused(String),
}

/// Compiles and runs Rhai vessels; holds the AST cache.
pub struct RhaiRunner {
    compiler: Engine,
    cache: moka::sync::Cache<String, Arc<AST>>,
}

impl Default for RhaiRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl RhaiRunner {
    /// A runner with an empty cache.
    pub fn new() -> Self {
        let mut compiler = bare_engine();
        compiler.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_EXPR_DEPTH);
        RhaiRunner {
            compiler,
            cache: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }

    /// The cached AST for a source hash.
    pub fn cached(&self, sha256: &str) -> Option<Arc<AST>> {
        self.cache.get(sha256)
    }

    /// Compiles a script; a syntax error names its line and column.
    pub fn compile(&self, sha256: &str, code: &[u8]) -> Result<Arc<AST>, CodeError> {
        if let Some(ast) = self.cache.get(sha256) {
            return Ok(ast);
        }
        let source = std::str::from_utf8(code)
            .map_err(|e| CodeError(format!("script is not UTF-8: {e}")))?;
        let ast = self.compiler.compile(source).map_err(|e| {
            let pos = e.position();
            match (pos.line(), pos.position()) {
                (Some(line), Some(col)) => CodeError(format!(
                    "syntax error at line {line}, column {col}: {}",
                    e.err_type()
                )),
                (Some(line), None) => {
                    CodeError(format!("syntax error at line {line}: {}", e.err_type()))
                }
                _ => CodeError(format!("syntax error: {}", e.err_type())),
            }
        })?;
        let ast = Arc::new(ast);
        self.cache.insert(sha256.to_owned(), ast.clone());
        Ok(ast)
    }

    /// Runs a compiled script on one input.
    pub fn run(&self, ast: &AST, input: &VesselInput) -> VesselOutcome {
        let started = Instant::now();
        let limits = input.limits;
        CURRENT.set(Some(RunState {
            collector: Collector::new(limits.output_bytes, input.logs.clone()),
            ops: 0,
            deadline: started + Duration::from_millis(limits.timeout_ms),
            cancel: input.cancel.clone(),
            fuel: limits.fuel,
            base: memory::held(),
            heap_limit: limits.memory_bytes.min(i64::MAX as u64) as i64,
            blocks_peak: 0,
            refused: None,
        }));
        let result = ENGINE.with_borrow_mut(|slot| {
            let engine = slot.get_or_insert_with(run_engine);
            let mut scope = build_scope(input);
            // The input the script starts with is not its own doing; what it holds from here on
            // is counted against `memory_bytes`.
            with_run(|run| run.base = memory::held());
            let engine = &*engine;
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            }));
            match ran {
                Ok(result) => result,
                Err(payload) => match payload.downcast::<Stop>() {
                    Ok(stop) => Err(EvalAltResult::ErrorTerminated(
                        Dynamic::from(*stop),
                        Position::NONE,
                    )
                    .into()),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
            }
        });
        let RunState {
            collector,
            ops,
            blocks_peak,
            refused,
            ..
        } = CURRENT.take().unwrap_or_else(|| RunState {
            collector: Collector::default(),
            ops: 0,
            deadline: started,
            cancel: CancelFlag::default(),
            fuel: 0,
            base: memory::Held::default(),
            heap_limit: 0,
            blocks_peak: 0,
            refused: None,
        });
        if blocks_peak > RETIRE_AFTER_BLOCKS {
            memory::retire_thread();
        }
        let ops_used = ops;
        // A refusal the script's last operations left behind ends the run as if the next
        // operation had seen it.
        let result = match refused {
            Some(message) => Err(EvalAltResult::ErrorTerminated(
                Dynamic::from(Stop::Refused(message)),
                Position::NONE,
            )
            .into()),
            None => result,
        };
        let (exit_code, reason, error) = judge(result, collector.overflowed, limits);
        VesselOutcome {
            status: if reason.is_none() {
                VesselStatus::Succeeded
            } else {
                VesselStatus::Failed
            },
            exit_code,
            reason,
            error,
            variables: collector.variables,
            rows: collector.rows,
            stdout: collector.stdout,
            stderr: collector.stderr,
            fuel_used: ops_used,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// An engine with the standard library and nothing else: no file or module access (a raw
/// engine has no module resolver, so `import` finds nothing), and no `eval`, which would run
/// code that was never checked when the fleet was saved.
fn bare_engine() -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(STD.clone());
    engine.disable_symbol("eval");
    engine
}

/// The engine of a vessel thread: the standard library, the vessel functions and callbacks
/// that act on the run in progress ([`CURRENT`]). Per-run limits are set before each run.
fn run_engine() -> Engine {
    let mut engine = bare_engine();
    // Sizes are held by the heap count and by the functions of `guard`, which size a value
    // before making it, against what the run has left. Rhai's own limits on the size of
    // strings, arrays and maps are left off: they are checked after a value is made, and
    // where one of them fails while a value is formatted (`+` with a non-string, string
    // interpolation), Rhai formats the value again without any check, writing out every
    // shared copy it holds. The fast operators are off so that `+` and `+=` on strings reach
    // the checked versions in `guard` rather than Rhai's built-in ones.
    engine
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_EXPR_DEPTH)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_fast_operators(false);
    guard::register(&mut engine);
    engine.on_progress(|n| {
        let stop = with_run(|run| {
            run.ops = n;
            if n > run.fuel {
                return Some(Stop::Fuel);
            }
            if let Some(message) = run.refused.take() {
                return Some(Stop::Refused(message));
            }
            // At every operation: what one operation can allocate is sized first (`guard`) or
            // is a small multiple of what the script holds, so it never holds much more than
            // its limit.
            let held = memory::held().since(run.base);
            if held.bytes > run.heap_limit {
                return Some(Stop::Memory);
            }
            // One operation adds at most one level of nesting, so values stay shallower than
            // the cap allows.
            run.blocks_peak = run.blocks_peak.max(held.blocks);
            if held.blocks > MAX_HELD_BLOCKS {
                return Some(Stop::Blocks);
            }
            if n % CLOCK_EVERY == 0 {
                if Instant::now() >= run.deadline {
                    return Some(Stop::Timeout);
                }
                if run.collector.overflowed {
                    return Some(Stop::Output);
                }
                if run.cancel.is_cancelled() {
                    return Some(Stop::Cancelled);
                }
            }
            None
        })
        .flatten();
        // A stop is unwound to `RhaiRunner::run` rather than returned to Rhai as an error:
        // where the operation is the call of a formatting function (string interpolation,
        // `+` with a non-string), Rhai takes any error as the function failing and formats the
        // value itself, unchecked, writing out every shared copy it holds; a script could aim
        // its fuel at that operation. `resume_unwind` skips the panic hook; Rhai restores its
        // state on unwinding (its own guards are drop-based).
        if let Some(stop) = stop {
            std::panic::resume_unwind(Box::new(stop));
        }
        None
    });
    // What the collector keeps or sends on (log lines, variables, rows) is output, bounded by
    // `output_bytes`, and is left out of the heap count; the script's own values passed in are
    // dropped outside, so freeing them is counted.
    engine.on_print(|s| {
        with_run(|run| {
            // One call per line, so a live copy sees whole lines.
            memory::uncounted(|| run.collector.log(false, &format!("{s}\n")));
        });
    });
    engine.on_debug(|s, _, _| {
        with_run(|run| {
            memory::uncounted(|| run.collector.log(true, &format!("{s}\n")));
        });
    });
    engine.register_fn(
        "set_var",
        |name: &str, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
            // Serialising writes out every shared copy a value holds; size it first.
            if value.is_map() || value.is_array() {
                guard::admit_json("set_var", &value)?;
            }
            let result = memory::uncounted(|| {
                let value = dynamic_to_var(value.clone());
                with_run(|run| run.collector.set_var(name, value))
                    .unwrap_or(Ok(()))
                    .map_err(|e| collect_error(e.to_string()))
            });
            drop(value);
            result
        },
    );
    engine.register_fn("emit", |row: Dynamic| -> Result<(), Box<EvalAltResult>> {
        if deeper_than(&row, MAX_ROW_DEPTH) {
            return Err(collect_error(format!(
                "emit: the row is nested deeper than {MAX_ROW_DEPTH} levels"
            )));
        }
        // The row becomes a JSON tree holding its own copy of every shared string; size it
        // first.
        guard::admit_tree("emit", &row)?;
        let result = memory::uncounted(|| {
            let row: serde_json::Value = rhai::serde::from_dynamic(&row)?;
            with_run(|run| run.collector.emit(row))
                .unwrap_or(Ok(()))
                .map_err(|e| collect_error(e.to_string()))
        });
        drop(row);
        result
    });
    engine.register_fn("exit", |code: i64| -> Result<(), Box<EvalAltResult>> {
        Err(EvalAltResult::ErrorTerminated(Dynamic::from(Stop::Exit(code)), Position::NONE).into())
    });
    engine
}

/// Whether arrays, maps and curried function pointers (which serialize as arrays) nest more than
/// `levels` deep in `value`. Recursive, but never more than `levels + 1` calls deep.
fn deeper_than(value: &Dynamic, levels: usize) -> bool {
    let below = |items: &mut dyn Iterator<Item = &Dynamic>| {
        if levels == 0 {
            return true;
        }
        for item in items {
            if deeper_than(item, levels - 1) {
                return true;
            }
        }
        false
    };
    if let Some(array) = value.read_lock::<rhai::Array>() {
        below(&mut array.iter())
    } else if let Some(map) = value.read_lock::<Map>() {
        below(&mut map.values())
    } else if let Some(f) = value.read_lock::<rhai::FnPtr>() {
        f.is_curried() && below(&mut f.iter_curry())
    } else {
        false
    }
}

fn collect_error(message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
}

/// Strings stay as they are; maps and arrays become JSON; everything else its display form.
fn dynamic_to_var(value: Dynamic) -> String {
    if value.is_string() {
        return value.into_string().unwrap_or_default();
    }
    if value.is_map() || value.is_array() {
        return serde_json::to_string(&value).unwrap_or_default();
    }
    if value.is_unit() {
        return String::new();
    }
    value.to_string()
}

fn build_scope(input: &VesselInput) -> Scope<'static> {
    let mut scope = Scope::new();
    let body: &[u8] = &input.body;
    let payload = match parse_payload(&input.request.content_type, body) {
        Payload::Json(v) => v,
        Payload::Form(fields) => {
            let map: Map = fields
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            Dynamic::from_map(map)
        }
        Payload::Raw => body_dynamic(body),
    };
    scope.push_constant("payload", payload);
    scope.push_constant("body", body_dynamic(body));
    let request = rhai::serde::to_dynamic(&*input.request).unwrap_or_default();
    scope.push_constant("request", request);
    let mut run = Map::new();
    let ids = &input.ids;
    run.insert("id".into(), ids.fleet_run_id.clone().into());
    run.insert("fleet_id".into(), ids.fleet_id.clone().into());
    run.insert("project_id".into(), ids.project_id.clone().into());
    run.insert("org_id".into(), ids.org_id.clone().into());
    run.insert("vessel".into(), ids.vessel.clone().into());
    run.insert("attempt".into(), (ids.attempt as i64).into());
    scope.push_constant("run", run);
    let vars: Map = input
        .variables
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.clone().into()))
        .collect();
    scope.push("vars", vars);
    scope
}

/// Text bodies become strings; bytes that are not UTF-8 become a blob.
fn body_dynamic(body: &[u8]) -> Dynamic {
    match std::str::from_utf8(body) {
        Ok(s) => s.into(),
        Err(_) => Dynamic::from_blob(body.to_vec()),
    }
}

type Judged = (Option<i32>, Option<FailureReason>, Option<String>);

fn judge(
    result: Result<Dynamic, Box<EvalAltResult>>,
    overflowed: bool,
    limits: super::Limits,
) -> Judged {
    let exit = |code: i64| -> Judged {
        let code = code.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        if overflowed {
            let msg = format!("output limit of {} bytes reached", limits.output_bytes);
            (Some(code), Some(FailureReason::OutputLimit), Some(msg))
        } else if code == 0 {
            (Some(0), None, None)
        } else {
            (Some(code), Some(FailureReason::ExitCode), None)
        }
    };
    let err = match result {
        Ok(v) => return exit(v.as_int().unwrap_or(0)),
        Err(err) => err,
    };
    let message = err.to_string();
    match err.unwrap_inner() {
        EvalAltResult::ErrorTerminated(token, _) => match token.clone().try_cast::<Stop>() {
            Some(Stop::Exit(code)) => exit(code),
            Some(Stop::Fuel) => (
                None,
                Some(FailureReason::FuelExhausted),
                Some(format!("fuel of {} operations exhausted", limits.fuel)),
            ),
            Some(Stop::Timeout) => (
                None,
                Some(FailureReason::Timeout),
                Some(format!("timed out after {} ms", limits.timeout_ms)),
            ),
            Some(Stop::Cancelled) => (
                None,
                Some(FailureReason::Cancelled),
                Some("the run was cancelled".into()),
            ),
            Some(Stop::Blocks) => (
                None,
                Some(FailureReason::MemoryLimit),
                Some(format!(
                    "the script held more than {MAX_HELD_BLOCKS} separate values on the heap"
                )),
            ),
            Some(Stop::Memory) => (
                None,
                Some(FailureReason::MemoryLimit),
                Some(format!(
                    "the script held more than its memory limit of {} bytes",
                    limits.memory_bytes
                )),
            ),
            Some(Stop::Refused(message)) => (None, Some(FailureReason::MemoryLimit), Some(message)),
            Some(Stop::Output) | None => (
                None,
                Some(FailureReason::OutputLimit),
                Some(format!(
                    "output limit of {} bytes reached",
                    limits.output_bytes
                )),
            ),
        },
        EvalAltResult::ErrorTooManyOperations(_) => (
            None,
            Some(FailureReason::FuelExhausted),
            Some(format!("fuel of {} operations exhausted", limits.fuel)),
        ),
        EvalAltResult::ErrorDataTooLarge(what, pos) => (
            None,
            Some(FailureReason::MemoryLimit),
            Some(format!(
                "{what} over the memory limit of {} bytes ({pos})",
                limits.memory_bytes
            )),
        ),
        EvalAltResult::ErrorStackOverflow(pos) => (
            None,
            Some(FailureReason::MemoryLimit),
            Some(format!(
                "call depth over the limit of {MAX_CALL_LEVELS} ({pos})"
            )),
        ),
        _ if overflowed => (
            None,
            Some(FailureReason::OutputLimit),
            Some(format!(
                "output limit of {} bytes reached",
                limits.output_bytes
            )),
        ),
        _ => (None, Some(FailureReason::ScriptError), Some(message)),
    }
}

/// A body as a script's `payload` gets it: JSON straight into Rhai values (parsed once, into the
/// form that is used), else as [`Payload`] decides.
pub fn parse_payload(content_type: &str, body: &[u8]) -> Payload<Dynamic> {
    Payload::parse_with(content_type, body, |bytes| {
        serde_json::from_slice::<Dynamic>(bytes).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, RequestMeta, RunIds};
    use std::collections::BTreeMap;

    fn run(script: &str, body: &str, limits: Limits) -> VesselOutcome {
        let runner = RhaiRunner::new();
        let ast = runner
            .compile(
                &wharf_core::util::sha256_hex(script.as_bytes()),
                script.as_bytes(),
            )
            .unwrap();
        let input = VesselInput {
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            request: Arc::new(RequestMeta {
                content_type: "application/json".into(),
                ..Default::default()
            }),
            ids: RunIds::default(),
            variables: BTreeMap::from([("abc".to_string(), "123".to_string())]),
            limits,
            cancel: Default::default(),
            logs: None,
        };
        runner.run(&ast, &input)
    }

    #[test]
    fn sets_variables_emits_rows_and_exits() {
        let out = run(
            r#"set_var("repo", payload.repo); set_var("n", 2); emit(#{a: 1}); print("hi"); exit(3);"#,
            r#"{"repo":"acme/tools"}"#,
            Limits::default(),
        );
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.reason, Some(FailureReason::ExitCode));
        assert_eq!(out.variables["repo"], "acme/tools");
        assert_eq!(out.variables["n"], "2");
        assert_eq!(out.rows, vec![serde_json::json!({"data": {"a": 1}})]);
        assert_eq!(out.stdout, "hi\n");
        assert!(out.fuel_used > 0);
    }

    #[test]
    fn exit_cannot_be_caught() {
        let out = run("try { exit(4) } catch { } 0", "", Limits::default());
        assert_eq!(out.exit_code, Some(4));
    }

    #[test]
    fn limits_have_typed_reasons() {
        let small = Limits {
            fuel: 10_000,
            ..Limits::default()
        };
        assert_eq!(
            run("loop {}", "", small).reason,
            Some(FailureReason::FuelExhausted)
        );
        let slow = Limits {
            fuel: u64::MAX / 2,
            timeout_ms: 50,
            ..Limits::default()
        };
        assert_eq!(
            run("loop {}", "", slow).reason,
            Some(FailureReason::Timeout)
        );
        let bomb = run(r#"let s = "xx"; loop { s += s; }"#, "", Limits::default());
        assert_eq!(
            bomb.reason,
            Some(FailureReason::MemoryLimit),
            "{:?}",
            bomb.error
        );
        let deep = run("fn f(n) { f(n + 1) } f(0)", "", Limits::default());
        assert_eq!(
            deep.reason,
            Some(FailureReason::MemoryLimit),
            "{:?}",
            deep.error
        );
        let out = Limits {
            output_bytes: 1024,
            ..Limits::default()
        };
        assert_eq!(
            run(r#"loop { print("spam") }"#, "", out).reason,
            Some(FailureReason::OutputLimit)
        );
    }

    #[test]
    fn a_run_that_held_many_values_asks_for_a_fresh_thread() {
        let _ = memory::take_retire();
        let out = run("let a = [1, 2]; a.len()", "", Limits::default());
        assert_eq!(out.exit_code, Some(2));
        assert!(!memory::take_retire(), "a small run keeps its thread");
        let out = run(
            "let a = 0; for i in 0..6000 { a = [take(a)]; } 0",
            "",
            Limits::default(),
        );
        assert_eq!(out.exit_code, Some(0), "{:?}", out.error);
        assert!(memory::take_retire(), "12,000 blocks held");
    }

    #[test]
    fn thrown_error_names_its_position() {
        let out = run("let x = 1;\nthrow \"boom\";", "", Limits::default());
        assert_eq!(out.reason, Some(FailureReason::ScriptError));
        let error = out.error.unwrap();
        assert!(
            error.contains("boom") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = RhaiRunner::new()
            .compile("x", b"let a = 1;\nlet = ;")
            .unwrap_err();
        assert!(err.0.contains("line 2"), "{}", err.0);
    }
}

/// Bodies parse alike into JSON values (variable overrides) and Rhai values (`payload`).
#[cfg(test)]
mod payload_tests {
    use super::parse_payload;
    use serde_json::Value;
    use wharf_core::vessel::{Payload, PayloadKind};

    #[test]
    fn json_nested_past_the_recursion_limit_is_raw_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            Payload::<Value>::parse("application/json", deep.as_bytes()).kind(),
            PayloadKind::Raw
        );
        let dynamic = parse_payload("application/json", deep.as_bytes());
        assert!(matches!(dynamic, Payload::Raw));
        let shallow = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse_payload("application/json", shallow.as_bytes()),
            Payload::Json(_)
        ));
    }

    /// Found by the `json_to_rhai` fuzz target: the same number must come out the same
    /// whether a body becomes JSON values (variable overrides) or Rhai values (`payload`).
    #[test]
    fn a_float_parses_alike_into_json_and_into_rhai() {
        let direct = parses_alike(b"\t\t636E66\r\r\r\r");
        assert_eq!(direct.as_f64(), Some(636e66));
    }

    /// Parses a JSON body both ways and checks that the Rhai value converts back to the JSON
    /// value; returns the JSON value.
    fn parses_alike(body: &[u8]) -> Value {
        let Payload::Json(direct) = Payload::<Value>::parse("application/json", body) else {
            panic!("JSON expected");
        };
        let Payload::Json(dynamic) = parse_payload("application/json", body) else {
            panic!("JSON expected");
        };
        let back: Value = rhai::serde::from_dynamic(&dynamic).unwrap();
        assert_eq!(back, direct);
        direct
    }

    /// Found by the `json_to_rhai` fuzz target: an integer past `i64::MAX` is a float in a Rhai
    /// script, so it is the same float in variable overrides, not exact digits the script never
    /// sees.
    #[test]
    fn an_integer_past_i64_is_the_same_float_in_json_and_in_rhai() {
        let direct = parses_alike(b"     14444444444444444444");
        assert_eq!(direct.as_f64(), Some(14444444444444444444.0));
        assert!(direct.as_u64().is_none());

        let nested: Payload = Payload::parse(
            "application/json",
            br#"{"id":[18446744073709551615],"ok":9223372036854775807}"#,
        );
        let object = nested.object().unwrap();
        assert_eq!(object["id"][0].as_f64(), Some(18446744073709551615.0));
        assert!(object["id"][0].as_u64().is_none());
        assert_eq!(
            object["ok"].as_i64(),
            Some(i64::MAX),
            "i64 integers stay exact"
        );
    }
}
