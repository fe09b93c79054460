//! A small timing harness shared by the benchmarks: interleaved batches, medians, ratios.
//!
//! Subject and baseline run in alternating batches inside one process, so drift of the machine
//! (frequency, other load) hits both alike; the ratio of the medians is what is reported.

use std::time::Instant;

/// Median nanoseconds per call of `subject` and `baseline`, over `batches` alternating batches
/// of `iters` calls each (after one warm-up batch of each).
pub fn interleaved(
    batches: usize,
    iters: usize,
    mut subject: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..iters {
            f();
        }
        started.elapsed().as_nanos() as f64 / iters as f64
    };
    time(&mut subject);
    time(&mut baseline);
    let (mut s, mut b) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        s.push(time(&mut subject));
        b.push(time(&mut baseline));
    }
    (median(s), median(b))
}

/// The median of some samples.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints one comparison line with its target, and returns whether the target is met.
pub fn report(
    what: &str,
    subject_ns: f64,
    baseline: &str,
    baseline_ns: f64,
    max_ratio: f64,
) -> bool {
    let ratio = subject_ns / baseline_ns;
    let met = ratio <= max_ratio;
    println!(
        "{what:<44} wharf {:>9.2} µs | {baseline} {:>9.2} µs | ratio {ratio:>5.2} (target ≤ {max_ratio}: {})",
        subject_ns / 1e3,
        baseline_ns / 1e3,
        if met { "met" } else { "NOT met" }
    );
    met
}
