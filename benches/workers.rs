//! What handing work to the worker threads costs ([`nnc::codegen::workers::run`]): a job of
//! two empty tasks, one for the calling thread and one for a worker spinning between jobs, as
//! between the kernels of a step. Each kernel split over two threads pays this once; at batch
//! 1, where a product takes a few microseconds, it decides whether splitting pays at all.
//! A job whose tasks write a cache line each, which the caller then reads, adds the transfer
//! of what a task wrote from one core to the other.

use criterion::{criterion_group, criterion_main, Criterion};
use nnc::codegen::workers;
use std::sync::atomic::{AtomicU64, Ordering};

/// One cache line per task.
#[repr(align(64))]
struct Line(AtomicU64);

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("workers");
    group.sample_size(20);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    group.bench_function("two_empty_tasks", |b| b.iter(|| workers::run(2, &|_| {})));
    let lines = [Line(AtomicU64::new(0)), Line(AtomicU64::new(0))];
    group.bench_function("two_tasks_each_writing_a_line", |b| {
        b.iter(|| {
            workers::run(2, &|t| {
                lines[t].0.fetch_add(1, Ordering::Relaxed);
            });
            lines[0].0.load(Ordering::Relaxed) + lines[1].0.load(Ordering::Relaxed)
        })
    });
    group.bench_function("calling_thread_alone", |b| {
        b.iter(|| {
            workers::run(1, &|t| {
                lines[t].0.fetch_add(1, Ordering::Relaxed);
            });
            lines[0].0.load(Ordering::Relaxed)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
