//! The weight seam: every network's tensors, recorded by name as they are
//! loaded, so LoRA merging ([`crate::lora`]) can overwrite a layer's weight in
//! place and the layer sees the new values on its next forward pass.
//!
//! The layers hold clones of the very tensors recorded here (a Candle
//! `Tensor` clone shares its storage), and [`WeightTable::write`] copies new
//! values into that storage (`Tensor::slice_set` over the whole tensor). An
//! int8 layer ([`super::quant`]) shares its weight with the table the same
//! way (`Arc<RwLock<Q8Weight>>`): the table hands out its dequantised values
//! and quantises what is written. We do
//! not wrap the weights in `candle_core::Var`: `Var::from_tensor` copies
//! every tensor once more at load time, and a variable tensor held by a layer
//! would make every forward pass record a backprop graph.

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::conditioner::EncoderRole;
use super::quant::SharedQ8;
use crate::kernels::q8::Q8Weight;

/// A network of a loaded pipeline whose weights are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    /// The UNet (SD 1.x, 2.x, XL), diffusers' tensor names.
    Unet,
    /// SD 3's MMDiT, diffusers' tensor names.
    Transformer,
    /// A CLIP text encoder by role, transformers' tensor names
    /// (`text_model.encoder.layers.N.self_attn.q_proj.weight`).
    TextEncoder(EncoderRole),
}

impl Network {
    pub fn name(self) -> String {
        match self {
            Network::Unet => "unet".into(),
            Network::Transformer => "transformer".into(),
            Network::TextEncoder(role) => format!("text encoder ({})", role.name()),
        }
    }
}

/// A weight as a layer holds it.
#[derive(Clone)]
enum Stored {
    Dense(Tensor),
    Q8(SharedQ8),
}

/// A copy of a weight's stored values, to put back with
/// [`WeightTable::restore`] (an int8 weight is kept as int8).
pub enum Snapshot {
    Dense(Tensor),
    Q8(Q8Weight),
}

impl Snapshot {
    /// Bytes the copy holds.
    pub fn bytes(&self) -> u64 {
        match self {
            Snapshot::Dense(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
            Snapshot::Q8(q) => q.bytes() as u64,
        }
    }
}

/// Name -> weight of one network, as the layers hold them (model dtype and
/// device, or int8). Filled while the network is built; shared by `Arc`.
#[derive(Default)]
pub struct WeightTable {
    tensors: RwLock<BTreeMap<String, Stored>>,
}

impl WeightTable {
    fn record(&self, name: &str, t: &Tensor) {
        self.tensors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Stored::Dense(t.clone()));
    }

    /// Records `name` as the int8 weight `q`, replacing (and so freeing) the
    /// dense tensor recorded when it was read.
    pub(crate) fn record_quantized(&self, name: &str, q: SharedQ8) {
        self.tensors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Stored::Q8(q));
    }

    fn stored(&self, name: &str) -> Option<Stored> {
        self.tensors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The tensor a layer holds under `name` (diffusers / transformers name,
    /// e.g. `down_blocks.0.attentions.0.proj_in.weight`); for an int8 weight,
    /// its dequantised values (f32, CPU).
    pub fn get(&self, name: &str) -> Option<Tensor> {
        match self.stored(name)? {
            Stored::Dense(t) => Some(t),
            Stored::Q8(q) => q
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .dequantize()
                .ok(),
        }
    }

    /// The shape of weight `name` and the bytes it holds (without reading an
    /// int8 weight's values).
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, u64)> {
        Some(match self.stored(name)? {
            Stored::Dense(t) => (
                t.dims().to_vec(),
                (t.elem_count() * t.dtype().size_in_bytes()) as u64,
            ),
            Stored::Q8(q) => {
                let q = q.read().unwrap_or_else(|e| e.into_inner());
                (q.dims().to_vec(), q.bytes() as u64)
            }
        })
    }

    /// Bytes every recorded weight holds (int8 weights as int8).
    pub fn bytes(&self) -> u64 {
        self.names()
            .iter()
            .filter_map(|n| self.info(n))
            .map(|(_, b)| b)
            .sum()
    }

    /// Whether weight `name` is held as int8.
    pub fn is_quantized(&self, name: &str) -> bool {
        matches!(self.stored(name), Some(Stored::Q8(_)))
    }

    /// A copy of weight `name`'s stored values.
    pub fn snapshot(&self, name: &str) -> Result<Snapshot> {
        Ok(match self.stored(name) {
            None => bail!("the model has no weight `{name}`"),
            Some(Stored::Dense(t)) => Snapshot::Dense(t.copy()?),
            Some(Stored::Q8(q)) => {
                Snapshot::Q8(q.read().unwrap_or_else(|e| e.into_inner()).clone())
            }
        })
    }

    /// Puts back what [`WeightTable::snapshot`] copied, bit for bit.
    pub fn restore(&self, name: &str, snapshot: &Snapshot) -> Result<()> {
        match (self.stored(name), snapshot) {
            (Some(Stored::Q8(q)), Snapshot::Q8(values)) => {
                *q.write().unwrap_or_else(|e| e.into_inner()) = values.clone();
                Ok(())
            }
            (_, Snapshot::Dense(t)) => self.write(name, t),
            (_, Snapshot::Q8(_)) => bail!("weight `{name}` is not an int8 weight"),
        }
    }

    /// Every recorded name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.tensors.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites the weight `name` in place with `values` (same shape; cast
    /// to the weight's dtype and moved to its device first; an int8 weight
    /// quantises them). Every layer that holds the weight sees the new values.
    ///
    /// Errors: an unknown name, a shape mismatch, values sharing the
    /// weight's own storage (Candle's `slice_set` refuses them), non-finite
    /// values for an int8 weight.
    pub fn write(&self, name: &str, values: &Tensor) -> Result<()> {
        let dst = match self.stored(name) {
            None => bail!("the model has no weight `{name}`"),
            Some(Stored::Q8(q)) => {
                let new = Q8Weight::quantize(values)
                    .with_context(|| format!("quantising weight `{name}`"))?;
                let mut q = q.write().unwrap_or_else(|e| e.into_inner());
                if new.dims() != q.dims() {
                    bail!(
                        "weight `{name}` is {:?}, the new values {:?}",
                        q.dims(),
                        new.dims()
                    );
                }
                *q = new;
                return Ok(());
            }
            Some(Stored::Dense(t)) => t,
        };
        if dst.dims() != values.dims() {
            bail!(
                "weight `{name}` is {:?}, the new values {:?}",
                dst.dims(),
                values.dims()
            );
        }
        let src = values
            .to_device(dst.device())?
            .to_dtype(dst.dtype())?
            .contiguous()?;
        dst.slice_set(&src, 0, 0)
            .with_context(|| format!("writing weight `{name}`"))
    }
}

/// [`SimpleBackend`] over memory-mapped safetensors that records every
/// floating-point tensor it hands out in a [`WeightTable`].
struct Recording {
    inner: MmapedSafetensors,
    table: Arc<WeightTable>,
}

impl Recording {
    fn keep(&self, name: &str, t: Tensor) -> Tensor {
        if t.dtype().is_float() {
            self.table.record(name, &t);
        }
        self.release(name);
        t
    }

    /// Drops tensor `name`'s mapped pages from this process once it has been
    /// copied out (Candle copies every tensor it reads from a map): without
    /// this every byte of the file stays resident until the map is dropped
    /// at the end of loading, on top of the copies (an SD 1.5 UNet: 3.3 GiB
    /// more peak RSS while loading). The pages stay in the page cache; a
    /// later read of the same bytes maps them again.
    fn release(&self, name: &str) {
        #[cfg(unix)]
        if let Ok(view) = self.inner.get(name) {
            let data = view.data();
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
            let start = data.as_ptr() as usize & !(page - 1);
            let end = data.as_ptr() as usize + data.len();
            // SAFETY: [start, end) lies in the read-only private file mapping
            // `inner` holds (whole pages around the tensor's bytes);
            // MADV_DONTNEED on such a mapping only drops pages, which are
            // read again from the file if touched, so no data changes.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get(&self.inner, s, name, h, dtype, dev)?;
        Ok(self.keep(name, t))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get_unchecked(&self.inner, name, dtype, dev)?;
        Ok(self.keep(name, t))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.get(name).is_ok()
    }
}

/// A `VarBuilder` over memory-mapped safetensors (as
/// `VarBuilder::from_mmaped_safetensors`) whose tensors are also recorded in
/// the returned table.
///
/// # Safety
///
/// As `VarBuilder::from_mmaped_safetensors`: the files must not change
/// while mapped.
pub unsafe fn recording_var_builder(
    paths: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, Arc<WeightTable>)> {
    let inner = MmapedSafetensors::multi(paths)?;
    let table = Arc::new(WeightTable::default());
    let backend = Recording {
        inner,
        table: table.clone(),
    };
    Ok((
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone()),
        table,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Module;

    #[test]
    fn a_written_weight_is_seen_by_the_layer_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let dev = Device::Cpu;
        let w = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        candle_core::safetensors::save(&[("lin.weight".to_string(), w)].into(), &path).unwrap();
        let (vb, table) = unsafe { recording_var_builder(&[path], DType::F32, &dev) }.unwrap();
        let lin = candle_nn::linear_no_bias(3, 2, vb.pp("lin")).unwrap();
        assert_eq!(table.names(), ["lin.weight"]);
        let x = Tensor::ones((1, 3), DType::F32, &dev).unwrap();
        let before: Vec<f32> = lin
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(before, [3.0, 3.0]);
        let twos = Tensor::full(2f32, (2, 3), &dev).unwrap();
        table.write("lin.weight", &twos).unwrap();
        let after: Vec<f32> = lin
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(after, [6.0, 6.0]);
        // The weight's own storage is refused; a copy of it is fine.
        let own = table.get("lin.weight").unwrap();
        assert!(table.write("lin.weight", &own).is_err());
        table.write("lin.weight", &own.copy().unwrap()).unwrap();
        assert!(table.write("nope.weight", &twos).is_err());
        assert!(table
            .write(
                "lin.weight",
                &Tensor::ones((3, 2), DType::F32, &dev).unwrap()
            )
            .is_err());
    }
}
