//! The weight seam: every network's tensors, recorded by name as they are
//! loaded, so LoRA merging ([`crate::lora`]) can overwrite a layer's weight in
//! place and the layer sees the new values on its next forward pass.
//!
//! The layers hold clones of the very tensors recorded here (a Candle
//! `Tensor` clone shares its storage), and [`WeightTable::write`] copies new
//! values into that storage (`Tensor::slice_set` over the whole tensor). We do
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

/// Name -> tensor of one network, as the layers hold them (model dtype and
/// device). Filled while the network is built; shared by `Arc`.
#[derive(Default)]
pub struct WeightTable {
    tensors: RwLock<BTreeMap<String, Tensor>>,
}

impl WeightTable {
    fn record(&self, name: &str, t: &Tensor) {
        self.tensors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), t.clone());
    }

    /// The tensor a layer holds under `name` (diffusers / transformers name,
    /// e.g. `down_blocks.0.attentions.0.proj_in.weight`).
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.tensors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
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
    /// to the weight's dtype and moved to its device first). Every layer that
    /// holds the weight sees the new values.
    ///
    /// Errors: an unknown name, a shape mismatch, values sharing the
    /// weight's own storage (Candle's `slice_set` refuses them).
    pub fn write(&self, name: &str, values: &Tensor) -> Result<()> {
        let Some(dst) = self.get(name) else {
            bail!("the model has no weight `{name}`");
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
        t
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
