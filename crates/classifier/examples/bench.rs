//! Benchmark: decode, preprocess and inference per image, as JSON on stdout.
//!
//! `cargo run --release -p iras-classifier --example bench -- PACK_DIR THREADS BATCH ROUNDS FILE…`
//! Used by `scripts/bench-classifier`, which runs the Python reference side by side.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::print_stderr)]

use std::num::NonZeroUsize;
use std::time::Instant;

use iras_classifier::{Classifier, ClassifierOptions, ModelPack};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: bench PACK_DIR THREADS BATCH ROUNDS FILE...");
        std::process::exit(2);
    }
    let pack = ModelPack::load(&args[0]).unwrap();
    let threads: usize = args[1].parse().unwrap();
    let batch: usize = args[2].parse().unwrap();
    let rounds: usize = args[3].parse().unwrap();
    let blobs: Vec<Vec<u8>> = args[4..]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let options = ClassifierOptions {
        intra_threads: NonZeroUsize::new(threads),
        ..ClassifierOptions::default()
    };
    let mut c = Classifier::new(&pack, options).unwrap();
    c.classify(&blobs[0], 1).unwrap(); // warm-up
    let (mut dec, mut pre, mut inf, mut n) = (0u64, 0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for _ in 0..rounds {
        for chunk in blobs.chunks(batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            for r in c.classify_batch(&refs, 5).unwrap() {
                let t = r.unwrap().timings;
                dec += t.decode_us;
                pre += t.preprocess_us;
                inf += t.inference_us;
                n += 1;
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64() * 1000.0;
    let ms = |us: u64| us as f64 / 1000.0 / n as f64;
    println!(
        "{{\"decode_ms\": {:.4}, \"preprocess_ms\": {:.4}, \"inference_ms\": {:.4}, \"wall_ms_per_image\": {:.4}, \"images\": {n}}}",
        ms(dec),
        ms(pre),
        ms(inf),
        wall / n as f64
    );
}
