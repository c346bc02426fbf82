//! Deriving independent random streams from one user seed, so that e.g. epoch 7 of a loader or
//! image 123 of the built-in dataset can be reproduced without replaying what came before.

/// SplitMix64's finaliser: a bijection on u64 that scatters nearby inputs, so seeds 0, 1, 2, …
/// give unrelated generators.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of sub-stream `stream` of `seed`. Mixing the stream number before combining keeps
/// (seed, stream) and (seed + 1, stream − 1) apart.
pub fn derive(seed: u64, stream: u64) -> u64 {
    mix(seed ^ mix(stream))
}
