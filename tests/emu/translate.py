"""Turns a kernels/cuda/*.cu file into C++ that runs on the CPU (test_backend_ops_emu).

usage: translate.py IN.cu OUT.cc

The only CUDA syntax a C++ compiler cannot read is the kernel launch; everything else comes
from the emulated headers of tests/emu/ (cuda_runtime.h with tests/cuda_emu.h, cublas_v2.h,
cuda_bf16.h), found first on the include path. Each launch

    kernel<<<grid, block[, smem[, stream]]>>>(args);

becomes

    emu_launch_kernel("kernel", dim3(grid), dim3(block), smem, (cudaStream_t)(stream), kernel,
                      emu_args_of(kernel)(args));

which takes the arguments at once and queues the kernel on its stream (tests/emu/cuda_runtime.h).
The source is otherwise kept line for line, and a #line directive points compiler messages at
the .cu file.
"""
import re
import sys


def split_top(s):
    """Splits s at commas outside parentheses, brackets and angle-free braces."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def translate(src, path):
    out, i = [], 0
    pat = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<")
    while True:
        m = pat.search(src, i)
        if not m:
            out.append(src[i:])
            break
        out.append(src[i:m.start()])
        close = src.index(">>>", m.end())
        conf = split_top(src[m.end():close])
        j = close + 3
        while src[j].isspace():
            j += 1
        if src[j] != "(":
            sys.exit("%s: launch of %s: '(' expected after >>>" % (path, m.group(1)))
        depth, k = 0, j
        while True:
            if src[k] == "(":
                depth += 1
            elif src[k] == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        args = src[j + 1:k]
        if len(conf) < 2 or len(conf) > 4:
            sys.exit("%s: launch of %s: <<<grid, block[, smem[, stream]]>>> expected" %
                     (path, m.group(1)))
        smem = conf[2] if len(conf) > 2 else "0"
        name = m.group(1)
        stream = conf[3] if len(conf) > 3 else "0"
        out.append("emu_launch_kernel(\"%s\", dim3(%s), dim3(%s), (size_t)(%s), "
                   "(cudaStream_t)(%s), %s, emu_args_of(%s)(%s))" %
                   (name, conf[0], conf[1], smem, stream, name, name, args))
        i = k + 1
    return '#line 1 "%s"\n' % path + "".join(out)


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path) as f:
        src = f.read()
    with open(out_path, "w") as f:
        f.write(translate(src, src_path))


main()
