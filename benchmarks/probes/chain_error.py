# How far MLX's CPU quantized-matmul arithmetic (one sequential bf16 accumulator,
# every weight, product and partial sum rounded to bf16; notes/cpu-kernels.md) and
# f32 accumulation with one final bf16 rounding (zmlx's Precision::F32) land from the
# exact dot product, on random 4-bit rows of K = 2048 (one scale and bias a row) with
# bf16 activations, 300 rows.
# Error is |result - exact| / sum |terms|. Needs numpy. Run: python3 chain_error.py
import numpy as np
rng=np.random.default_rng(0)
def bf16(a):
    a=np.asarray(a,dtype=np.float32)
    b=a.view(np.uint32).astype(np.uint64)
    r=((b+0x7FFF+((b>>16)&1))>>16)<<16
    return r.astype(np.uint32).view(np.float32)
K=2048; N=300
rel_mlx=[];rel_f32=[]
for n in range(N):
    x=bf16(rng.uniform(-1,1,K).astype(np.float32))
    q=rng.integers(0,16,K).astype(np.float32)
    s=bf16(np.float32(rng.uniform(0.002,0.03))); b=bf16(np.float32(rng.uniform(-0.1,0.1)))
    w=bf16(bf16(s*q)+b)
    exact=np.dot(x.astype(np.float64),(s*q+b).astype(np.float64))
    acc=np.float32(0)
    for k in range(K):
        acc=bf16(acc+bf16(x[k]*w[k]))
    f32=np.float32(np.sum((x*(s*q+b)).astype(np.float32),dtype=np.float32))
    scale=np.sum(np.abs(x.astype(np.float64)*(s*q+b)))
    rel_mlx.append(abs(float(acc)-exact)/scale); rel_f32.append(abs(float(bf16(f32))-exact)/scale)
for name,r in [("mlx bf16 chain",rel_mlx),("f32 accumulate, one bf16 rounding",rel_f32)]:
    r=np.array(r); print(f"{name}: |err|/sum|terms| median {np.median(r):.2e}, p99 {np.quantile(r,0.99):.2e}, max {r.max():.2e}")
