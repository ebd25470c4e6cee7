//! The typed_decode fuzz body under `cargo test`: the committed corpus, then random inputs.

use std::path::Path;

#[test]
fn typed_decode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/typed_decode");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "the typed_decode corpus is empty");
    // Random inputs from a fixed generator (splitmix64), so a failure replays.
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for _ in 0..2000 {
        let len = (next() % 96) as usize;
        inputs.push((0..len).map(|_| next() as u8).collect());
    }
    for input in &inputs {
        logcache::fuzz::typed_decode(input);
    }
}
