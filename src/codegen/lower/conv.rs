//! Convolutions and their gradients. Where the direct kernels apply ([`direct_conv`]), the
//! forward convolution runs on them (its images split over the threads, or at batch 1 its
//! output channels), and so does the weight gradient (by parts of the output channels, from
//! bordered images), also fused with the unpooling of a max pooling's gradient
//! ([`grad_weight_unpool`]); the others run on Winograd or on im2col and GEMM
//! ([`conv::step`]).

use super::{add_scratch, channel_parts};
use super::{Built, ChannelSplit, Cx, RowSplit, Scratch, Step};
use crate::codegen::im2col::ConvGeom;
use crate::codegen::kernel::KernelModule;
use crate::codegen::{conv, direct_conv, CodegenError};
use crate::ir::{Chain, Op, UnaryOp, Window};

/// `Conv2d`, `Conv2dGradInput` and `Conv2dGradWeight` by window `w`.
pub(super) fn conv2d(cx: &Cx, out: &mut Built, w: &Window) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (op, x) = (&cx.n.op, cx.ity(0));
    if let (Op::Conv2d(_), Some(geom)) = (op, direct_geom(&x, w)) {
        return direct_forward(cx, out, &geom, (None, false));
    }
    if let (Op::Conv2dGradWeight(_), Some(geom)) = (op, direct_geom(&x, w)) {
        if let Some(step) = direct_grad_weight(cx, out, &geom)? {
            return Ok(step);
        }
    }
    conv::step(
        &mut out.km,
        cx.header,
        op,
        w,
        &x,
        &cx.ity(1),
        cx.ty,
        cx.i,
        &cx.ins,
        cx.scratch_base,
        &mut out.scratch,
        None,
        false,
    )
}

/// The forward convolution of node `cx`, of images of `geom`, run directly ([`direct_step`])
/// with its epilogue (the chain and the slot of its bias, and whether a 2×2 max pooling
/// follows), and pooled besides when the graph reads that ([`crate::ir::Op::PoolBeside`]).
pub(super) fn direct_forward(
    cx: &Cx,
    out: &mut Built,
    geom: &ConvGeom,
    epi: (Option<(&Chain, Option<usize>)>, bool),
) -> Result<Step, CodegenError> {
    let at = DirectAt {
        slots: [cx.ins[0], cx.ins[1], cx.i],
        scratch_base: cx.scratch_base,
    };
    let beside = cx.second_result(|op| matches!(op, Op::PoolBeside(_)));
    let (km, scratch) = (&mut out.km, &mut out.scratch);
    direct_step(km, cx.header, geom, cx.ty, at, epi, beside, scratch)
}

/// `Conv2dGradWeight` of images of `geom` run directly, when its types fit and
/// [`direct_conv::grad_weight_applies`]: the images bordered ([`border_all`]), then the sums by
/// parts of the output channels; `None` otherwise.
fn direct_grad_weight(
    cx: &Cx,
    out: &mut Built,
    geom: &ConvGeom,
) -> Result<Option<Step>, CodegenError> {
    let (i, ins, ty, header, w) = (cx.i, &cx.ins, cx.ty, cx.header, &geom.win);
    let (o, dy) = (ty.dims.first().copied().unwrap_or(0), cx.ity(1));
    let (oh, ow) = geom.out_hw().map_err(CodegenError::Graph)?;
    let fits = dy.batched && dy.dims == [o, oh, ow] && ty.dims == [o, geom.c, w.kernel, w.kernel];
    if !(fits && direct_conv::grad_weight_applies(geom)) {
        return Ok(None);
    }
    let pad = border_all(cx, out, geom, false)?;
    let part = o / channel_parts(o, 8);
    let title = format!(
        "{header}\n; direct convolution weight gradient: sums, by parts of {part} channels"
    );
    let k = out.km.plain_kernel(&title, |kb| {
        direct_conv::emit_grad_weight(kb, geom, (o, part), [ins[1], i, pad])
    })?;
    let taps = geom.c * w.kernel * w.kernel;
    Ok(Some(Step::Parts {
        k,
        parts: o / part,
        moves: vec![(ins[1], 4 * part * oh * ow), (i, 4 * part * taps)],
        min_batch: 0,
    }))
}

/// `Conv2dGradWeightUnpool`: the weight gradient of a direct convolution by window `conv`
/// activated by `act` and max-pooled by `pool`, from the pooled gradient, routed back through
/// the pooling and the activation as it is summed (and the bias gradient, when something reads
/// it); by parts of the output channels.
pub(super) fn grad_weight_unpool(
    cx: &Cx,
    out: &mut Built,
    conv: &Window,
    pool: &Window,
    act: Option<UnaryOp>,
) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let (i, ins, header) = (cx.i, &cx.ins, cx.header);
    let geom = unpool_geom(cx, conv, pool)?;
    let y = cx.ity(1);
    let (o, oh, ow) = (y.dims[0], y.dims[1], y.dims[2]);
    // Rows of four pooled windows or more are summed as they are routed, from images
    // whose rows are split by column parity; shorter ones are routed into a plane of
    // `dz` per part first.
    let split = direct_conv::split_row(&geom).1;
    let pad = border_all(cx, out, &geom, split)?;
    let part = o / channel_parts(o, 8);
    let parts = o / part;
    let dz = (!split).then(|| {
        add_scratch(
            &mut out.scratch,
            cx.scratch_base,
            Scratch {
                per: parts * oh * ow,
                batched: false,
                per_thread: false,
            },
        )
    });
    // Its bias gradient, if anything reads it: a second result.
    let bias = cx.second_result(|op| matches!(op, Op::UnpoolBiasGrad));
    let title = format!(
        "{header}\n; direct convolution weight gradient from the pooling's gradient: \
         sums, by parts of {part} channels"
    );
    let k = out.km.plain_kernel(&title, |kb| {
        direct_conv::emit_grad_weight_unpool(
            kb,
            &geom,
            (o, part),
            act,
            [ins[1], ins[2], i, pad],
            dz,
            bias,
        )
    })?;
    let taps = geom.c * conv.kernel * conv.kernel;
    let mut moves = vec![
        (ins[1], 4 * part * oh * ow),
        (ins[2], 4 * part * (oh / 2) * (ow / 2)),
        (i, 4 * part * taps),
    ];
    moves.extend(dz.map(|dz| (dz, 4 * oh * ow)));
    moves.extend(bias.map(|b| (b, 4 * part)));
    Ok(Step::Parts {
        k,
        parts,
        moves,
        min_batch: 0,
    })
}

/// The geometry of the convolution of a `Conv2dGradWeightUnpool`, or an error when it has no
/// kernel for its types ([`unpool_grad_weight_applies`]).
fn unpool_geom(cx: &Cx, conv: &Window, pool: &Window) -> Result<ConvGeom, CodegenError> {
    let (x, y) = (cx.ity(0), cx.ity(1));
    direct_geom(&x, conv)
        .filter(|g| unpool_grad_weight_applies(g, pool, &y, &cx.ity(2), cx.ty))
        .ok_or_else(|| {
            CodegenError::Graph(format!(
                "{}: no kernel for {x} with {y} (see unpool_grad_weight_applies)",
                cx.n.op.name()
            ))
        })
}

/// The geometry of a forward convolution of images `x` that runs directly
/// ([`direct_conv::applies`]), or `None`.
pub fn direct_geom(x: &crate::ir::Type, win: &crate::ir::Window) -> Option<ConvGeom> {
    let [c, h, w] = x.dims[..] else { return None };
    let geom = ConvGeom { c, h, w, win: *win };
    (x.batched && direct_conv::applies(&geom)).then_some(geom)
}

/// Whether a convolution of images `x` with window `conv` and output `y` runs directly and can
/// pool its output by `pool` besides ([`crate::ir::Op::PoolBeside`]): 2×2 windows of stride 2
/// tiling the output.
pub fn pool_beside_applies(
    x: &crate::ir::Type,
    conv: &crate::ir::Window,
    y: &crate::ir::Type,
    pool: &crate::ir::Window,
) -> bool {
    direct_geom(x, conv).is_some() && pools_in_pairs(pool, y)
}

/// Whether `pool` is the 2×2 max pooling of stride 2, without padding, whose windows tile the
/// planes of `y` (`B×C×H×W` with even `H` and `W`): the one the direct convolution's kernels
/// pool and route by pairs of rows ([`max_pool_row`], [`max_pool_grad_row`]).
///
/// [`max_pool_row`]: crate::codegen::pool::max_pool_row
/// [`max_pool_grad_row`]: crate::codegen::pool::max_pool_grad_row
fn pools_in_pairs(pool: &crate::ir::Window, y: &crate::ir::Type) -> bool {
    let pairs = crate::ir::Window {
        kernel: 2,
        stride: 2,
        pad: 0,
    };
    let tiles = |d: usize| d >= 2 && d.is_multiple_of(2);
    *pool == pairs && y.dims.len() == 3 && tiles(y.dims[1]) && tiles(y.dims[2])
}

/// Whether [`crate::ir::Op::Conv2dGradWeightUnpool`] has a kernel for a convolution of `geom`
/// (run directly, [`direct_conv::grad_weight_applies`]) whose output `y` is max-pooled by
/// `pool` into `dp`, 2×2 windows of stride 2 that tile it ([`pools_in_pairs`]), with the weight
/// gradient `dw`.
pub fn unpool_grad_weight_applies(
    geom: &ConvGeom,
    pool: &crate::ir::Window,
    y: &crate::ir::Type,
    dp: &crate::ir::Type,
    dw: &crate::ir::Type,
) -> bool {
    let Ok((oh, ow)) = geom.out_hw() else {
        return false;
    };
    let o = y.dims.first().copied().unwrap_or(0);
    // Rows of windows in whole fours or not, but of output positions in whole fours: the
    // images are bordered with each row split by the parity of its columns.
    direct_conv::grad_weight_applies(geom)
        && ow.is_multiple_of(4)
        && pools_in_pairs(pool, y)
        && y.batched
        && dp.batched
        && y.dims == [o, oh, ow]
        && dp.dims == [o, oh / 2, ow / 2]
        && dw.dims == [o, geom.c, geom.win.kernel, geom.win.kernel]
}

/// The first step of a direct weight gradient: every image of the batch (the node's first
/// input) bordered into a scratch of its own, split over the threads by images; that scratch's
/// slot.
fn border_all(
    cx: &Cx,
    out: &mut Built,
    geom: &ConvGeom,
    split: bool,
) -> Result<usize, CodegenError> {
    let x = cx.ins[0];
    let s = direct_conv::scratch(geom, split);
    let pad = add_scratch(&mut out.scratch, cx.scratch_base, s);
    let title = format!(
        "{}\n; direct convolution weight gradient: borders",
        cx.header
    );
    let border = out.km.kernel(&title, |kb| {
        direct_conv::emit_border_all(kb, geom, [x, pad], split)
    })?;
    out.steps.push(Step::Kernel {
        k: border,
        rows: Some(RowSplit {
            batched: vec![(x, geom.image_len()), (pad, s.per)],
            per_thread: Vec::new(),
            min_batch: 2,
            channels: Vec::new(),
        }),
    });
    Ok(pad)
}

/// Table slots of a direct convolution: `x`, `w`, the output, and where scratch slots start.
struct DirectAt {
    slots: [usize; 3],
    scratch_base: usize,
}

/// A direct convolution ([`direct_conv`]) of output type `ty` with its epilogue (the chain and
/// the slot of its bias, and whether a 2×2 max pooling follows): one kernel, its images split
/// over the threads, each with its own bordered image; and for a batch smaller than the
/// threads (one image) kernels that compute a part of the output channels, one per part count
/// ([`direct_parts`]), each part with its own bordered image. Every output channel is summed
/// the same way in all, so the bits are the same.
#[allow(clippy::too_many_arguments)]
fn direct_step(
    km: &mut KernelModule,
    header: &str,
    geom: &ConvGeom,
    ty: &crate::ir::Type,
    at: DirectAt,
    (epi, pooled): (Option<(&crate::ir::Chain, Option<usize>)>, bool),
    beside: Option<usize>,
    scratch: &mut Vec<Scratch>,
) -> Result<Step, CodegenError> {
    let [x, w, out] = at.slots;
    let o = ty.dims[0];
    let pooled_plane = (ty.dims[1] / 2) * (ty.dims[2] / 2);
    let s = direct_conv::forward_scratch(geom, o, pooled);
    let pad = add_scratch(scratch, at.scratch_base, s);
    let pool_note = if pooled {
        ", max pooling 2×2 fused"
    } else if beside.is_some() {
        ", max pooled 2×2 besides"
    } else {
        ""
    };
    // Without the e-graph pass, like the GEMM's micro-kernel: it would re-elaborate the loads
    // and `fma`s of the unrolled taps chain by chain and spill the accumulators.
    let k = km.plain_kernel(
        &format!("{header}\n; direct convolution{pool_note}"),
        |kb| direct_conv::emit(kb, geom, (o, o), [x, w, out, pad], epi, pooled, beside),
    )?;
    let mut channels = Vec::new();
    for parts in direct_parts(o) {
        let part = o / parts;
        let all = Scratch {
            per: s.per * parts,
            batched: false,
            per_thread: false,
        };
        let pads = add_scratch(scratch, at.scratch_base, all);
        let header =
            format!("{header}\n; direct convolution{pool_note}, {part} of {o} output channels");
        let k = km.plain_kernel(&header, |kb| {
            direct_conv::emit(kb, geom, (part, o), [x, w, out, pads], epi, pooled, beside)
        })?;
        let taps = geom.c * geom.win.kernel * geom.win.kernel;
        let mut moves = vec![
            (w, 4 * part * taps),
            (out, 4 * part * ty.dims[1] * ty.dims[2]),
            (pads, 4 * s.per),
        ];
        if let Some((_, Some(bias))) = epi {
            moves.push((bias, 4 * part));
        }
        moves.extend(beside.map(|b| (b, 4 * part * pooled_plane)));
        channels.push(ChannelSplit { k, parts, moves });
    }
    Ok(Step::Kernel {
        k,
        rows: Some(RowSplit {
            batched: [(x, geom.image_len()), (out, ty.per_sample())]
                .into_iter()
                .chain(beside.map(|b| (b, o * pooled_plane)))
                .collect(),
            per_thread: vec![(pad, s.per)],
            min_batch: 2,
            channels,
        }),
    })
}

/// The part counts a direct convolution of `o` output channels is cut into at batch 1, one
/// kernel each, increasing: 2, 3 and 4 where the parts are whole tiles of the kernel's 4
/// channels (32 channels: 2 parts of 16 and 4 of 8), else the most up to 4 that divide `o`
/// (none when that is 1). On the MNIST CNN's first layer (one input channel, 32 outputs) at
/// batch 1 the image split left one thread idle. On two threads, 2 parts rather than 4 take
/// the whole batch-1 inference to about 0.99 of its time (0.95–1.00 in ten runs, 0.98–1.00
/// with the two orders swapped in four; AMD Zen 4, both compiled in one process and run
/// alternately in rounds of 250 calls): each part borders its own copy of the image.
fn direct_parts(o: usize) -> Vec<usize> {
    let whole: Vec<usize> = (2..=4)
        .filter(|p| o.is_multiple_of(*p) && (o / p).is_multiple_of(direct_conv::TILE))
        .collect();
    if whole.is_empty() {
        Some(channel_parts(o, 4))
            .filter(|&p| p > 1)
            .into_iter()
            .collect()
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_convolutions_are_cut_into_whole_tiles_where_they_can() {
        assert_eq!(direct_parts(32), [2, 4]);
        assert_eq!(direct_parts(48), [2, 3, 4]);
        assert_eq!(direct_parts(12), [3]);
        // No whole tiles: the most parts up to 4 that divide the channels, or none.
        assert_eq!(direct_parts(6), [3]);
        assert_eq!(direct_parts(5), Vec::<usize>::new());
    }
}
