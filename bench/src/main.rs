//! The load harness of docs/BENCHMARKS.md is tracked by issue #3 and not
//! built yet; this binary says so rather than pretending to measure.

fn main() {
    eprintln!("switchboard-bench: the load harness is not built yet (issue #3); see docs/BENCHMARKS.md");
    std::process::exit(2);
}
