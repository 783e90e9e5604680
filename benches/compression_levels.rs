//! Which compression levels to use (docs/performance.md, "Compression levels"): for each
//! gzip level and brotli quality, the CPU time per KiB of input and the size left, on web
//! pages, JSON and CSS of the sizes apps send, compressed whole and streamed in 16 KiB
//! pushes (each flushed, as shoal streams a proxied body).
//!
//! `cargo bench --bench compression_levels` prints the tables. Single-threaded; run it on a
//! quiet machine, the ratios between rows are what matter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counts the bytes live on the heap, to tell what one encoder holds.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes an encoder holds once it has compressed and flushed `input`.
fn held_by(codec: &Codec, input: &[u8]) -> usize {
    let before = LIVE.load(Relaxed);
    let mut encoder = Encoder::new(codec);
    encoder.writer().write_all(input).unwrap();
    encoder.writer().flush().unwrap();
    encoder.clear_output();
    let held = LIVE.load(Relaxed) - before;
    black_box(encoder);
    held
}

/// An HTML page like a templated app's: repeated markup around varying text.
fn html(bytes: usize) -> Vec<u8> {
    let mut page = String::from("<!doctype html><html><head><title>Orders</title><link rel=stylesheet href=/app.css></head><body><table class=\"orders\">\n");
    let mut i = 0u64;
    while page.len() < bytes {
        i += 1;
        let customer = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra"][i as usize % 4];
        page.push_str(&format!(
            "<tr class=\"row-{}\"><td><a href=\"/orders/{}\">#{}</a></td><td>{customer}</td><td class=amount>{}.{:02} EUR</td><td><span class=\"status status-{}\">{}</span></td></tr>\n",
            i % 2, i * 7919 % 100_000, i * 7919 % 100_000, i * 37 % 1000, i * 13 % 100,
            i % 3, ["paid", "shipped", "open"][i as usize % 3]
        ));
    }
    page.truncate(bytes);
    page.into_bytes()
}

/// An API's JSON list.
fn json(bytes: usize) -> Vec<u8> {
    let mut out = String::from("{\"items\":[");
    let mut i = 0u64;
    while out.len() < bytes {
        i += 1;
        out.push_str(&format!(
            "{{\"id\":{},\"sku\":\"SKU-{:06}\",\"name\":\"Widget {}\",\"price\":{}.{:02},\"tags\":[\"tools\",\"{}\"],\"in_stock\":{}}},",
            i, i * 104_729 % 1_000_000, i * 31 % 997, i * 17 % 500, i % 100,
            ["garden", "kitchen", "office"][i as usize % 3], i % 5 != 0
        ));
    }
    out.truncate(bytes);
    out.into_bytes()
}

/// A stylesheet.
fn css(bytes: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < bytes {
        i += 1;
        out.push_str(&format!(
            ".c{i} {{ margin: {}px {}px; color: #{:06x}; font: {}px/1.4 system-ui, sans-serif; }}\n",
            i % 24,
            i % 16,
            i * 2_654_435_761 % 0xFF_FFFF,
            12 + i % 8
        ));
    }
    out.truncate(bytes);
    out.into_bytes()
}

enum Codec {
    Gzip(u32),
    Brotli(u32, u32),
}

/// A streaming compressor writing into memory.
enum Encoder {
    Gzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(codec: &Codec) -> Encoder {
        match codec {
            Codec::Gzip(level) => Encoder::Gzip(Box::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(*level),
            ))),
            Codec::Brotli(quality, window) => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                *quality,
                *window,
            ))),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(encoder) => encoder.as_mut(),
            Encoder::Brotli(encoder) => encoder.as_mut(),
        }
    }

    /// Drops the output so far (what is left is the encoder's own state).
    fn clear_output(&mut self) {
        match self {
            Encoder::Gzip(encoder) => encoder.get_mut().clear(),
            Encoder::Brotli(encoder) => encoder.get_mut().clear(),
        }
    }

    /// Ends the stream; the output's length.
    fn finish(self) -> usize {
        match self {
            Encoder::Gzip(encoder) => encoder.finish().unwrap().len(),
            Encoder::Brotli(encoder) => encoder.into_inner().len(),
        }
    }
}

/// Compresses `input` in pushes of `push` bytes (each flushed); returns the output size.
fn run(codec: &Codec, input: &[u8], push: usize) -> usize {
    let mut encoder = Encoder::new(codec);
    for piece in input.chunks(push) {
        encoder.writer().write_all(piece).unwrap();
        encoder.writer().flush().unwrap();
    }
    encoder.finish()
}

/// CPU time per KiB of input (median of rounds) and the output's share of the input.
fn measure(codec: &Codec, inputs: &[Vec<u8>], push: usize) -> (f64, f64) {
    let total: usize = inputs.iter().map(Vec::len).sum();
    let out: usize = inputs.iter().map(|input| run(codec, input, push)).sum();
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut iterations = 0;
        while started.elapsed() < Duration::from_millis(150) {
            for input in inputs {
                black_box(run(codec, black_box(input), push));
            }
            iterations += 1;
        }
        let per_kib = started.elapsed().as_secs_f64() * 1e6 / (iterations as f64 * total as f64 / 1024.0);
        rounds.push(per_kib);
    }
    rounds.sort_by(f64::total_cmp);
    (rounds[2], out as f64 / total as f64)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this unoptimised with
    // nothing: then it only checks that it starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes = [8 * 1024, 64 * 1024];
    let inputs: Vec<Vec<u8>> = sizes
        .iter()
        .flat_map(|&size| [html(size), json(size), css(size)])
        .collect();
    let total_kib = inputs.iter().map(Vec::len).sum::<usize>() / 1024;
    println!("Inputs: HTML, JSON and CSS of 8 KiB and 64 KiB ({total_kib} KiB in all)");
    println!();
    let streaming = [
        ("gzip 4", Codec::Gzip(4)),
        ("gzip 9", Codec::Gzip(9)),
        ("brotli 2, window 2^18", Codec::Brotli(2, 18)),
        ("brotli 3, window 2^18", Codec::Brotli(3, 18)),
        ("brotli 4, window 2^16", Codec::Brotli(4, 16)),
        ("brotli 4, window 2^18", Codec::Brotli(4, 18)),
        ("brotli 4, window 2^22", Codec::Brotli(4, 22)),
        ("brotli 5, window 2^18", Codec::Brotli(5, 18)),
    ];
    println!(
        "| encoder | heap held after 64 KiB of HTML, flushed | µs per KiB, streamed | size left, streamed |"
    );
    println!("|---|---:|---:|---:|");
    for (name, codec) in &streaming {
        let held = held_by(codec, &html(64 * 1024)) / 1024;
        let (us, ratio) = measure(codec, &inputs, 16 * 1024);
        println!("| {name} | {held} KiB | {us:.2} | {:.1} % |", ratio * 100.0);
    }
    println!();
    println!("| coding | level | µs per KiB, whole | size left, whole | µs per KiB, streamed in 16 KiB pushes | size left, streamed |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut codecs: Vec<(String, Codec)> = (1..=9).map(|l| ("gzip".to_string(), Codec::Gzip(l))).collect();
    codecs.extend((1..=11).map(|q| ("brotli (window 2^18)".to_string(), Codec::Brotli(q, 18))));
    for (name, codec) in &codecs {
        let level = match codec {
            Codec::Gzip(level) | Codec::Brotli(level, _) => *level,
        };
        let (whole_us, whole_ratio) = measure(codec, &inputs, usize::MAX);
        let (streamed_us, streamed_ratio) = measure(codec, &inputs, 16 * 1024);
        println!(
            "| {name} | {level} | {whole_us:.2} | {:.1} % | {streamed_us:.2} | {:.1} % |",
            whole_ratio * 100.0,
            streamed_ratio * 100.0
        );
    }
}
