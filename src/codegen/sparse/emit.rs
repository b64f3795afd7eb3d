//! The compacted product's two kernels in Cranelift IR: the per-row one (compact each row of
//! `op(A)` into its list, then multiply it into C by depth blocks, [`emit_kernel`]) and the one
//! over given runs of a list ([`emit_segments_kernel`]).

use super::{Arg, Mode, SegArg, Segment};
use crate::codegen::gemm::{args, panel_flags};
use crate::codegen::kernel::{reinterpret, shuffle32};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// Stores (and loads of what the kernel itself writes).
fn rw() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Emits `for (i = start; i < end; i += step) vars = body(i, vars)` and returns the final
/// `vars`, with the builder in the block after the loop. The test is at the bottom (one taken
/// branch per iteration).
pub(in crate::codegen) fn for_range(
    b: &mut FunctionBuilder,
    (start, end, step): (Value, Value, i64),
    vars: &[Value],
    body: impl FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value>,
) -> Vec<Value> {
    let blk = b.create_block();
    let after = b.create_block();
    let ity = b.func.dfg.value_type(start);
    b.append_block_param(blk, ity);
    for &v in vars {
        let t = b.func.dfg.value_type(v);
        b.append_block_param(blk, t);
        b.append_block_param(after, t);
    }
    let mut init = vec![start];
    init.extend_from_slice(vars);
    let any = b.ins().icmp(IntCC::UnsignedLessThan, start, end);
    b.ins().brif(any, blk, &args(&init), after, &args(vars));
    b.switch_to_block(blk);
    let p = b.block_params(blk).to_vec();
    let out = body(b, p[0], &p[1..]);
    let next_i = b.ins().iadd_imm_s(p[0], step);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, next_i, end);
    let mut next = vec![next_i];
    next.extend_from_slice(&out);
    b.ins().brif(more, blk, &args(&next), after, &args(&out));
    b.switch_to_block(after);
    b.block_params(after).to_vec()
}

/// The kernel's arguments and the values derived from them once, at entry.
struct Ctx {
    ptr: Type,
    a: Value,
    a_row: Value,
    a_step: Value,
    k: Value,
    bg: Value,
    /// `bg` in all four lanes.
    bg4: Value,
    /// `[0, ldb, 2·ldb, 3·ldb]` (i32x4): the offsets of four consecutive rows of B.
    row_steps: Value,
    ldb: Value,
    rows: Value,
    list: Value,
    seg: Value,
    /// Bytes of one row's list region (`k · 8`).
    region: Value,
    /// Depth blocks, and bytes of one row's segment pointers (`(blocks + 1) · 8`).
    blocks: Value,
    seg_row: Value,
    /// Rows of B in a depth block.
    kbv: Value,
}

/// Appends `(off, v − bg)` at `p` and returns `p` advanced past it when `keep` (an i8 0/1).
fn append(b: &mut FunctionBuilder, cx: &Ctx, p: Value, off: Value, v: Value, keep: Value) -> Value {
    let x = b.ins().fsub(v, cx.bg);
    let off32 = b.ins().ireduce(types::I32, off);
    b.ins().store(rw(), off32, p, 0);
    b.ins().store(rw(), x, p, 4);
    let keep = b.ins().uextend(cx.ptr, keep);
    let step = b.ins().ishl_imm_u(keep, 3);
    b.ins().iadd(p, step)
}

/// Appends the entries of the f32x4 `v` that differ from the background (bit `l` of `mask`
/// set), all four written at once: each entry `(offset, v − bg)` is built in a vector lane
/// and stored whole, and its list's pointer advances past it only when kept. Along a row the
/// four go to one list, B's rows `off .. off + 3·ldb`; across rows, lane `l` to list `l`, all
/// at B's row `off`. Returns the lists' pointers.
fn append4(
    b: &mut FunctionBuilder,
    cx: &Ctx,
    ps: &[Value],
    off: Value,
    v: Value,
    mask: Value,
    mode: Mode,
) -> Vec<Value> {
    let x = b.ins().fsub(v, cx.bg4);
    let off32 = b.ins().ireduce(types::I32, off);
    let mut offs = b.ins().splat(types::I32X4, off32);
    if mode == Mode::AlongRow {
        offs = b.ins().iadd(offs, cx.row_steps);
    }
    // Entries 0 and 1, then 2 and 3: (offset, value) pairs, as i64s.
    let pairs = [[0, 4, 1, 5], [2, 6, 3, 7]].map(|lanes| {
        let p = shuffle32(b, offs, x, lanes);
        reinterpret(b, types::I64X2, p)
    });
    let mask = b.ins().uextend(cx.ptr, mask);
    let mut out = ps.to_vec();
    for l in 0..4usize {
        let i = if mode == Mode::AlongRow { 0 } else { l };
        let e = b.ins().extractlane(pairs[l / 2], (l % 2) as u8);
        b.ins().store(rw(), e, out[i], 0);
        // 8 bytes when bit l of the mask is set.
        let step = if l < 3 {
            b.ins().ishl_imm_u(mask, 3 - l as i64)
        } else {
            mask
        };
        let step = b.ins().band_imm_u(step, 8);
        out[i] = b.ins().iadd(out[i], step);
    }
    out
}

/// Compacts rows `r0 .. r0 + lanes` (`lanes` 1, or 4 in [`Mode::AcrossRows`]): for each depth
/// block records where each row's entries start, then appends the block's entries that are
/// not the background: one f32 at a time, or an f32x4 of four consecutive entries of one row
/// ([`Mode::AlongRow`], appended only when one of them is not the background) or of one entry
/// of four rows ([`Mode::AcrossRows`], always appended: [`append4`]).
fn emit_compact(b: &mut FunctionBuilder, cx: &Ctx, r0: Value, mode: Mode) {
    let ptr = cx.ptr;
    let lanes = if mode == Mode::AcrossRows { 4 } else { 1 };
    let mut ps = Vec::new();
    let mut segs = Vec::new();
    for l in 0..lanes {
        let r = b.ins().iadd_imm_s(r0, l);
        let reg = b.ins().imul(r, cx.region);
        ps.push(b.ins().iadd(cx.list, reg));
        let so = b.ins().imul(r, cx.seg_row);
        segs.push(b.ins().iadd(cx.seg, so));
    }
    let arow = b.ins().imul(r0, cx.a_row);
    let arow = b.ins().iadd(cx.a, arow);
    let zero = b.ins().iconst(ptr, 0);
    let ps = for_range(b, (zero, cx.blocks, 1), &ps, |b, kb, ps| {
        let kb8 = b.ins().ishl_imm_u(kb, 3);
        for (l, &p) in ps.iter().enumerate() {
            let at = b.ins().iadd(segs[l], kb8);
            b.ins().store(rw(), p, at, 0);
        }
        let lo = b.ins().imul(kb, cx.kbv);
        let hi = b.ins().iadd(lo, cx.kbv);
        let hi = b.ins().umin(hi, cx.k);
        let step = if mode == Mode::AlongRow { 4 } else { 1 };
        // The entry's address in A and its row's offset in B, advanced by the step.
        let ea = b.ins().imul(lo, cx.a_step);
        let at0 = b.ins().iadd(arow, ea);
        let off0 = b.ins().imul(lo, cx.ldb);
        let at_step = b.ins().imul_imm_s(cx.a_step, step);
        let off_step = b.ins().imul_imm_s(cx.ldb, step);
        let mut vars = vec![at0, off0];
        vars.extend_from_slice(ps);
        let out = for_range(b, (lo, hi, step), &vars, |b, _, vars| {
            let (at, off, ps) = (vars[0], vars[1], &vars[2..]);
            let mut next = vec![b.ins().iadd(at, at_step), b.ins().iadd(off, off_step)];
            if mode == Mode::Scalar {
                let v = b.ins().load(types::F32, panel_flags(), at, 0);
                let keep = b.ins().fcmp(FloatCC::NotEqual, v, cx.bg);
                next.push(append(b, cx, ps[0], off, v, keep));
                return next;
            }
            // Four entries at once. Along a row, nothing to append (the common case: runs of
            // background pixels) when all are bg. Across rows, whether lane l of one group is
            // kept says little about the next group (another image), and a branch on it was
            // mispredicted often enough to cost more than the appends.
            let v = b.ins().load(types::F32X4, panel_flags(), at, 0);
            let ne = b.ins().fcmp(FloatCC::NotEqual, v, cx.bg4);
            let mask = b.ins().vhigh_bits(types::I32, ne);
            if mode == Mode::AcrossRows {
                next.extend(append4(b, cx, ps, off, v, mask, mode));
                return next;
            }
            let some = b.create_block();
            let join = b.create_block();
            for _ in ps {
                b.append_block_param(join, ptr);
            }
            b.ins().brif(mask, some, &[], join, &args(ps));
            b.switch_to_block(some);
            let out = append4(b, cx, ps, off, v, mask, mode);
            b.ins().jump(join, &args(&out));
            b.switch_to_block(join);
            next.extend_from_slice(b.block_params(join));
            next
        });
        out[2..].to_vec()
    });
    let last = b.ins().ishl_imm_u(cx.blocks, 3);
    for (l, &p) in ps.iter().enumerate() {
        let at = b.ins().iadd(segs[l], last);
        b.ins().store(rw(), p, at, 0);
    }
}

/// Emits the sum over entries `s0 .. s1` of a list for columns `j .. j + 4·width` (`width`
/// f32x4 accumulators; 0 means one scalar column) starting from the values at `src`, stored
/// to `dst`.
fn emit_columns(
    b: &mut FunctionBuilder,
    width: usize,
    (s0, s1): (Value, Value),
    bcol: Value,
    src: Value,
    dst: Value,
) {
    let vty = if width == 0 { types::F32 } else { types::F32X4 };
    let acc: Vec<Value> = (0..width.max(1))
        // C may be src: it is read before this row's stores.
        .map(|t| b.ins().load(vty, rw(), src, (16 * t) as i32))
        .collect();
    let out = emit_entries(b, width, (s0, s1), bcol, &acc);
    for (t, &v) in out.iter().enumerate() {
        b.ins().store(rw(), v, dst, (16 * t) as i32);
    }
}

/// Emits the sum over entries `s0 .. s1` of a list (B's row offset from `bcol` and a value)
/// into the accumulators `acc` (`width` f32x4, or one f32 when `width` is 0); returns them.
fn emit_entries(
    b: &mut FunctionBuilder,
    width: usize,
    (s0, s1): (Value, Value),
    bcol: Value,
    acc: &[Value],
) -> Vec<Value> {
    let vty = if width == 0 { types::F32 } else { types::F32X4 };
    let nacc = width.max(1);
    // One entry at `p`: its value times B's row, added to the accumulators. B's vectors are
    // loaded into registers of their own, four at a time, then the value is broadcast: the
    // `fma` then writes each sum over its B vector (Cranelift's x64 `fma` is tied to a
    // multiplicand's register; a B vector folded in as a memory operand would tie it to the
    // shared broadcast and copy that before every `fma`).
    let entry = |b: &mut FunctionBuilder, p: Value, at: i32, acc: &[Value]| {
        let flags = rw();
        let off = b.ins().sload32(flags, p, at);
        let row = b.ins().iadd(bcol, off);
        let mut next = Vec::with_capacity(nacc);
        for group in acc.chunks(4).enumerate() {
            let (g, accs) = group;
            let bv: Vec<Value> = (0..accs.len())
                .map(|t| {
                    b.ins()
                        .load(vty, panel_flags(), row, (16 * (4 * g + t)) as i32)
                })
                .collect();
            let v = b.ins().load(types::F32, flags, p, at + 4);
            let x = if width == 0 {
                v
            } else {
                b.ins().splat(types::F32X4, v)
            };
            for (&bt, &a) in bv.iter().zip(accs) {
                next.push(b.ins().fma(bt, x, a));
            }
        }
        next
    };
    // Two entries per iteration while two are left, then the last one if any.
    let pair_end = b.ins().iadd_imm_s(s1, -8);
    let mut vars = vec![s0];
    vars.extend_from_slice(acc);
    let vars = for_range(b, (s0, pair_end, 16), &vars, |b, p, vars| {
        let mid = entry(b, p, 0, &vars[1..]);
        let mut out = vec![b.ins().iadd_imm_s(p, 16)];
        out.extend(entry(b, p, 8, &mid));
        out
    });
    let last = b.create_block();
    let done = b.create_block();
    for _ in 0..nacc {
        b.append_block_param(done, vty);
    }
    let one_left = b.ins().icmp(IntCC::UnsignedLessThan, vars[0], s1);
    b.ins().brif(one_left, last, &[], done, &args(&vars[1..]));
    b.switch_to_block(last);
    let fin = entry(b, vars[0], 0, &vars[1..]);
    b.ins().jump(done, &args(&fin));
    b.switch_to_block(done);
    b.block_params(done).to_vec()
}

/// Emits the loop over C's columns `0 .. n` by blocks of 8 f32x4 (repeated), at most one of
/// 4, single f32x4 (repeated), then single floats: `body(width, jb)` for each block, `width`
/// its f32x4 count (0 for one float) and `jb` the byte offset of its first column.
fn for_column_blocks(
    b: &mut FunctionBuilder,
    ptr: Type,
    n: Value,
    mut body: impl FnMut(&mut FunctionBuilder, usize, Value),
) {
    let mut j = b.ins().iconst(ptr, 0);
    for width in [8usize, 4, 1, 0] {
        let cols = (4 * width).max(1) as i64;
        let head = b.create_block();
        let block = b.create_block();
        let after = b.create_block();
        b.append_block_param(head, ptr);
        b.append_block_param(after, ptr);
        b.ins().jump(head, &args(&[j]));
        b.switch_to_block(head);
        let jj = b.block_params(head)[0];
        let jend = b.ins().iadd_imm_s(jj, cols);
        let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, jend, n);
        b.ins().brif(fits, block, &[], after, &args(&[jj]));
        b.switch_to_block(block);
        let jb = b.ins().ishl_imm_u(jj, 2);
        body(b, width, jb);
        let jnext = b.ins().iadd_imm_s(jj, cols);
        // Blocks of 8 and single vectors or scalars repeat; one block of 4 at most.
        if width == 4 {
            b.ins().jump(after, &args(&[jnext]));
        } else {
            b.ins().jump(head, &args(&[jnext]));
        }
        b.switch_to_block(after);
        j = b.block_params(after)[0];
    }
}

/// Emits the segments kernel: for each block of columns (8, 4, 1 f32x4, then scalars) and
/// each row, the accumulators (zero or C's) run through the row's segments in order, then
/// are stored.
pub(super) fn emit_segments_kernel(b: &mut FunctionBuilder, ptr: Type) {
    let word = crate::codegen::jitmod::args_struct(b, ptr);
    let arg = |b: &mut FunctionBuilder, f: SegArg| word(b, f as usize);
    let (bp, n, c, ldc) = (
        arg(b, SegArg::B),
        arg(b, SegArg::N),
        arg(b, SegArg::C),
        arg(b, SegArg::Ldc),
    );
    let (rows, list, segs, per_row) = (
        arg(b, SegArg::Rows),
        arg(b, SegArg::List),
        arg(b, SegArg::Segs),
        arg(b, SegArg::PerRow),
    );
    let accumulate = arg(b, SegArg::Accumulate);
    let keep = b.ins().icmp_imm_s(IntCC::NotEqual, accumulate, 0);
    let seg_row = b.ins().imul_imm_s(per_row, size_of::<Segment>() as i64);
    let zero = b.ins().iconst(ptr, 0);
    for_column_blocks(b, ptr, n, |b, width, jb| {
        let (vty, nacc) = if width == 0 {
            (types::F32, 1)
        } else {
            (types::F32X4, width)
        };
        let bcol = b.ins().iadd(bp, jb);
        let ccol = b.ins().iadd(c, jb);
        for_range(b, (zero, rows, 1), &[], |b, r, _| {
            let co = b.ins().imul(r, ldc);
            let crow = b.ins().iadd(ccol, co);
            let nought = if width == 0 {
                b.ins().f32const(0.0)
            } else {
                let z = b.ins().f32const(0.0);
                b.ins().splat(types::F32X4, z)
            };
            let acc: Vec<Value> = (0..nacc)
                .map(|t| {
                    let v = b.ins().load(vty, rw(), crow, (16 * t) as i32);
                    b.ins().select(keep, v, nought)
                })
                .collect();
            let so = b.ins().imul(r, seg_row);
            let row_segs = b.ins().iadd(segs, so);
            let out = for_range(b, (zero, per_row, 1), &acc, |b, k, acc| {
                let at = b.ins().imul_imm_s(k, size_of::<Segment>() as i64);
                let at = b.ins().iadd(row_segs, at);
                let first = b.ins().load(ptr, rw(), at, 0);
                let end = b.ins().load(ptr, rw(), at, 8);
                let b_off = b.ins().load(ptr, rw(), at, 16);
                let s0 = b.ins().ishl_imm_u(first, 3);
                let s0 = b.ins().iadd(list, s0);
                let s1 = b.ins().ishl_imm_u(end, 3);
                let s1 = b.ins().iadd(list, s1);
                let bseg = b.ins().iadd(bcol, b_off);
                emit_entries(b, width, (s0, s1), bseg, acc)
            });
            for (t, &v) in out.iter().enumerate() {
                b.ins().store(rw(), v, crow, (16 * t) as i32);
            }
            vec![]
        });
    });
    b.ins().return_(&[]);
}

/// Emits the kernel: compact every row of the call, then for each block of columns and depth
/// block, run every row's entries of that depth block.
pub(super) fn emit_kernel(b: &mut FunctionBuilder, ptr: Type) {
    let word = crate::codegen::jitmod::args_struct(b, ptr);
    let arg = |b: &mut FunctionBuilder, f: Arg| word(b, f as usize);
    let k = arg(b, Arg::K);
    let bg_bits = arg(b, Arg::Bg);
    let bg_bits = b.ins().ireduce(types::I32, bg_bits);
    let bg = b.ins().bitcast(types::F32, MemFlagsData::new(), bg_bits);
    let kbv = arg(b, Arg::Kb);
    let blocks = b.ins().iadd(k, kbv);
    let blocks = b.ins().iadd_imm_s(blocks, -1);
    let blocks = b.ins().udiv(blocks, kbv);
    let seg_row = b.ins().iadd_imm_s(blocks, 1);
    let seg_row = b.ins().ishl_imm_u(seg_row, 3);
    let region = b.ins().ishl_imm_u(k, 3);
    let ldb = arg(b, Arg::Ldb);
    let ldb32 = b.ins().ireduce(types::I32, ldb);
    let ldb4 = b.ins().splat(types::I32X4, ldb32);
    let iota: Vec<u8> = (0..4u32).flat_map(|i| i.to_le_bytes()).collect();
    let iota = b
        .func
        .dfg
        .constants
        .insert(cranelift_codegen::ir::ConstantData::from(iota));
    let iota = b.ins().vconst(types::I32X4, iota);
    let row_steps = b.ins().imul(ldb4, iota);
    let cx = Ctx {
        ptr,
        a: arg(b, Arg::A),
        a_row: arg(b, Arg::ARow),
        a_step: arg(b, Arg::AStep),
        k,
        bg,
        bg4: b.ins().splat(types::F32X4, bg),
        ldb,
        row_steps,
        rows: arg(b, Arg::Rows),
        list: arg(b, Arg::List),
        seg: arg(b, Arg::Seg),
        region,
        blocks,
        seg_row,
        kbv,
    };
    let zero = b.ins().iconst(ptr, 0);

    // Compaction, by the mode's loop.
    let mode = arg(b, Arg::Mode);
    let modes = [Mode::Scalar, Mode::AlongRow, Mode::AcrossRows];
    let blocks_of: Vec<_> = modes.iter().map(|_| b.create_block()).collect();
    let product = b.create_block();
    let is_along = b
        .ins()
        .icmp_imm_s(IntCC::Equal, mode, Mode::AlongRow as i64);
    let not_along = b.create_block();
    b.ins().brif(is_along, blocks_of[1], &[], not_along, &[]);
    b.switch_to_block(not_along);
    let is_across = b
        .ins()
        .icmp_imm_s(IntCC::Equal, mode, Mode::AcrossRows as i64);
    b.ins()
        .brif(is_across, blocks_of[2], &[], blocks_of[0], &[]);
    for (&m, &blk) in modes.iter().zip(&blocks_of) {
        b.switch_to_block(blk);
        let step = if m == Mode::AcrossRows { 4 } else { 1 };
        for_range(b, (zero, cx.rows, step), &[], |b, r, _| {
            emit_compact(b, &cx, r, m);
            vec![]
        });
        b.ins().jump(product, &[]);
    }

    // The product: column blocks of 8 vectors, at most one of 4, vectors, scalars.
    b.switch_to_block(product);
    let n = arg(b, Arg::N);
    let bp = arg(b, Arg::B);
    let init = arg(b, Arg::Init);
    let c = arg(b, Arg::C);
    let ldc = arg(b, Arg::Ldc);
    for_column_blocks(b, ptr, n, |b, width, jb| {
        let bcol = b.ins().iadd(bp, jb);
        let icol = b.ins().iadd(init, jb);
        let ccol = b.ins().iadd(c, jb);
        for_range(b, (zero, cx.blocks, 1), &[], |b, kb, _| {
            let first = b.ins().icmp_imm_s(IntCC::Equal, kb, 0);
            let kb8 = b.ins().ishl_imm_u(kb, 3);
            for_range(b, (zero, cx.rows, 1), &[], |b, r, _| {
                let so = b.ins().imul(r, cx.seg_row);
                let so = b.ins().iadd(so, kb8);
                let at = b.ins().iadd(cx.seg, so);
                let s0 = b.ins().load(ptr, rw(), at, 0);
                let s1 = b.ins().load(ptr, rw(), at, 8);
                let co = b.ins().imul(r, ldc);
                let crow = b.ins().iadd(ccol, co);
                let src = b.ins().select(first, icol, crow);
                emit_columns(b, width, (s0, s1), bcol, src, crow);
                vec![]
            });
            vec![]
        });
    });
    b.ins().return_(&[]);
}
