//! Devices, streams and where an op runs.

use crate::error::{check, Result};
use mlx_sys as sys;

/// The kind of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// The CPU backend.
    Cpu,
    /// The GPU backend (Metal on macOS, CUDA on Linux with MLX's CUDA build).
    Gpu,
}

/// A device: a type and an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    /// CPU or GPU.
    pub kind: DeviceType,
    /// The device's index (0 for the only one).
    pub index: i32,
}

impl Device {
    /// The CPU.
    pub const fn cpu() -> Device {
        Device {
            kind: DeviceType::Cpu,
            index: 0,
        }
    }

    /// The first GPU.
    pub const fn gpu() -> Device {
        Device {
            kind: DeviceType::Gpu,
            index: 0,
        }
    }

    pub(crate) fn type_code(self) -> i32 {
        match self.kind {
            DeviceType::Cpu => sys::MLXS_CPU as i32,
            DeviceType::Gpu => sys::MLXS_GPU as i32,
        }
    }

    pub(crate) fn from_codes(kind: i32, index: i32) -> Device {
        Device {
            kind: if kind == sys::MLXS_GPU as i32 {
                DeviceType::Gpu
            } else {
                DeviceType::Cpu
            },
            index,
        }
    }

    /// MLX's default device (the GPU when MLX was built with one and it is present).
    ///
    /// ```
    /// let d = mlx::Device::default_device()?;
    /// # Ok::<(), mlx::Error>(())
    /// ```
    pub fn default_device() -> Result<Device> {
        let (mut kind, mut index) = (0, 0);
        // SAFETY: out-pointers to locals.
        check(unsafe { sys::mlxs_default_device(&mut kind, &mut index) })?;
        Ok(Device::from_codes(kind, index))
    }

    /// Makes `self` the default device of later ops.
    pub fn set_default(self) -> Result<()> {
        // SAFETY: plain values.
        check(unsafe { sys::mlxs_set_default_device(self.type_code(), self.index) })
    }

    /// This device's default stream.
    pub fn default_stream(self) -> Result<Stream> {
        let mut index = 0;
        // SAFETY: out-pointer to a local.
        check(unsafe { sys::mlxs_default_stream(self.type_code(), self.index, &mut index) })?;
        Ok(Stream {
            device: self,
            index,
        })
    }

    /// A new stream on this device.
    pub fn new_stream(self) -> Result<Stream> {
        let mut index = 0;
        // SAFETY: out-pointer to a local.
        check(unsafe { sys::mlxs_new_stream(self.type_code(), self.index, &mut index) })?;
        Ok(Stream {
            device: self,
            index,
        })
    }
}

/// True when MLX has a usable GPU backend (Metal or CUDA) here.
///
/// ```
/// let _ = mlx::gpu_is_available()?;
/// # Ok::<(), mlx::Error>(())
/// ```
pub fn gpu_is_available() -> Result<bool> {
    let mut out = false;
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::mlxs_gpu_is_available(&mut out) })?;
    Ok(out)
}

/// True when MLX runs on Metal (Apple silicon).
pub fn metal_is_available() -> Result<bool> {
    let mut out = false;
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::mlxs_metal_is_available(&mut out) })?;
    Ok(out)
}

/// True when MLX runs on CUDA (MLX's CUDA build on an NVIDIA GPU).
pub fn cuda_is_available() -> Result<bool> {
    let mut out = false;
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::mlxs_cuda_is_available(&mut out) })?;
    Ok(out)
}

/// The compute capability (major, minor) of the GPU MLX's CUDA backend runs on;
/// `None` where MLX does not run on CUDA or does not report it.
///
/// # Errors
/// When MLX fails to read its device information.
pub fn cuda_compute_capability() -> Result<Option<(u32, u32)>> {
    let (mut major, mut minor) = (-1i32, -1i32);
    // SAFETY: out-pointers to locals.
    check(unsafe { sys::mlxs_cuda_compute_capability(&mut major, &mut minor) })?;
    Ok(match (u32::try_from(major), u32::try_from(minor)) {
        (Ok(a), Ok(b)) => Some((a, b)),
        _ => None,
    })
}

/// A queue of work on a device; ops on one stream run in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    /// The device the stream runs on.
    pub device: Device,
    /// MLX's index of the stream.
    pub index: i32,
}

impl Stream {
    /// Makes `self` the default stream of its device.
    pub fn set_default(self) -> Result<()> {
        // SAFETY: plain values.
        check(unsafe {
            sys::mlxs_set_default_stream(self.device.type_code(), self.device.index, self.index)
        })
    }

    /// Waits until every op queued on this stream has run.
    pub fn synchronize(self) -> Result<()> {
        // SAFETY: plain value.
        check(unsafe { sys::mlxs_synchronize(StreamOrDevice::Stream(self).raw()) })
    }
}

/// Where an op runs: the default stream, a device's default stream, or a stream.
///
/// Every op takes `impl Into<StreamOrDevice>`: pass `()` for the default,
/// a [`Device`] or a [`Stream`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamOrDevice {
    /// The default stream of the default device.
    #[default]
    Default,
    /// The default stream of a device.
    Device(Device),
    /// A specific stream.
    Stream(Stream),
}

impl StreamOrDevice {
    pub(crate) fn raw(self) -> sys::mlxs_sod {
        match self {
            StreamOrDevice::Default => sys::mlxs_sod {
                kind: sys::MLXS_SOD_DEFAULT as i32,
                device_type: 0,
                device_index: 0,
                stream_index: 0,
            },
            StreamOrDevice::Device(d) => sys::mlxs_sod {
                kind: sys::MLXS_SOD_DEVICE as i32,
                device_type: d.type_code(),
                device_index: d.index,
                stream_index: 0,
            },
            StreamOrDevice::Stream(s) => sys::mlxs_sod {
                kind: sys::MLXS_SOD_STREAM as i32,
                device_type: s.device.type_code(),
                device_index: s.device.index,
                stream_index: s.index,
            },
        }
    }

    /// The device the op will run on.
    pub fn device(self) -> Result<Device> {
        match self {
            StreamOrDevice::Default => Device::default_device(),
            StreamOrDevice::Device(d) => Ok(d),
            StreamOrDevice::Stream(s) => Ok(s.device),
        }
    }
}

impl From<()> for StreamOrDevice {
    fn from(_: ()) -> Self {
        StreamOrDevice::Default
    }
}

impl From<Device> for StreamOrDevice {
    fn from(d: Device) -> Self {
        StreamOrDevice::Device(d)
    }
}

impl From<&Device> for StreamOrDevice {
    fn from(d: &Device) -> Self {
        StreamOrDevice::Device(*d)
    }
}

impl From<Stream> for StreamOrDevice {
    fn from(s: Stream) -> Self {
        StreamOrDevice::Stream(s)
    }
}

impl From<&Stream> for StreamOrDevice {
    fn from(s: &Stream) -> Self {
        StreamOrDevice::Stream(*s)
    }
}

impl From<&StreamOrDevice> for StreamOrDevice {
    fn from(s: &StreamOrDevice) -> Self {
        *s
    }
}

impl StreamOrDevice {
    /// Waits until every op queued on this stream (a device: its default stream;
    /// the default: the default device's default stream) has run.
    pub fn synchronize(self) -> Result<()> {
        // SAFETY: plain value.
        check(unsafe { sys::mlxs_synchronize(self.raw()) })
    }
}

/// Waits until all queued work on every stream has run.
pub fn synchronize() -> Result<()> {
    // SAFETY: plain value.
    check(unsafe { sys::mlxs_synchronize(StreamOrDevice::Default.raw()) })
}
