//! LoRA and LyCORIS adapters (the LoRA core merges with this file).

pub mod lycoris;
