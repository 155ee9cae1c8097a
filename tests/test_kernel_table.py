"""The kernel tables as dispatch.cpp builds them (_kernels.kernel_table, what `qwen-cpu info
--kernels` prints), on every path this CPU runs: each weight type's kernels come from that path's
own code (or, where a path keeps a lower one's, from a path below it), and the few choices the
tables encode hold: the scalar prefill is its vec_dot per output (its only gemvs the float types'),
the 128-bit paths have no prefill
tiles, and the avx512 table's K-quant prefill tiles are its own 16-row ones (csrc/avx512/gemm_k.cpp)."""

import pytest

from qwen_cpu import _kernels

# Namespaces each path may take kernels from: its own and the paths it starts from (dispatch.cpp).
SOURCES = {
    "scalar": {"scalar"},
    "sse42": {"sse42"},
    "avx2": {"avx2"},
    "avxvnni": {"avxvnni"},
    "avxvnni_evex": {"avxvnni_evex"},
    "avx512": {"avx512", "avx2"},  # without AVX512-VNNI the quantized ones stay avx2's
    "neon": {"neon"},
    "neon_dotprod": {"neon"},
}
TYPES = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


def test_every_weight_type_has_a_vec_dot_from_its_own_path(isa):
    rows = _kernels.kernel_table()
    assert {r["type"] for r in rows} == TYPES
    for r in rows:
        for key in ("vec_dot", "gemm", "gemv", "layout_gemv", "layout_gemm"):
            name, act = r[key]
            if name:
                assert name.split("::")[0] in SOURCES[isa], (r["type"], key, name)
                assert act, (r["type"], key)
        assert r["vec_dot"][0], r["type"]
        assert (r["layout"] == "stored") == (r["layout_gemv"][0] == "")
        if r["layout_gemm"][0]:  # prefill over the layout reads the stored gemm's activations
            assert r["layout"] != "stored" and r["gemm"][0] and r["layout_gemm"][1] == r["gemm"][1], r


def test_the_tables_choices(isa):
    rows = {r["type"]: r for r in _kernels.kernel_table()}
    if isa == "scalar":
        for t, r in rows.items():  # one gemm per type, made of that type's vec_dot, on its activations
            assert r["gemm"][0].lower() == f"scalar::gemm_{t.lower()}" and r["gemm"][1] == r["vec_dot"][1], t
        assert all(r["layout"] == "stored" for r in rows.values())
        for t, r in rows.items():  # a decode gemv (with its several-row form) only for the float types
            assert r["gemv"][0] == (f"scalar::gemv_{t.lower()}" if t in ("F32", "F16", "BF16") else ""), t
    if isa in ("sse42", "neon", "neon_dotprod"):
        assert not any(r["gemm"][0] for r in rows.values())  # prefill loops over the vec_dots
    if isa == "avx512" and "avx512vnni" in _kernels.cpu_features().split():
        for t in ("Q4_K", "Q5_K", "Q6_K"):
            assert rows[t]["gemm"] == (f"avx512::gemm_{t[:2].lower()}_K", "Q8_K"), t
        for t in ("Q4_0", "Q5_0", "Q8_0"):
            assert rows[t]["gemm"] == (f"avx512::gemm_{t.lower()}", "Q8_X8")
        # Q4_0 in its own 16-row layout; the others in the avx2 tiles (dispatch.cpp, keep_decode) read in 512 bits
        assert rows["Q4_0"]["layout"] == "Q4_0_R16" and rows["Q4_0"]["layout_gemv"][0] == "avx512::gemv_q4_0_r16"
        for t in ("Q5_0", "Q8_0"):
            assert rows[t]["layout"] == f"{t}_R4T"
            # one Q8_0_R4T row stays with the avx2 Quad gemv where 512-bit operations run in halves
            # (Zen 4), in its form without the software prefetch on rows of one panel
            zen4 = t == "Q8_0" and "avx512-halves" in _kernels.cpu_features().split()
            assert rows[t]["layout_gemv"][0] == ("avx2::gemv_q8_0_r4t_hw" if zen4 else f"avx512::gemv_{t.lower()}_r4t")
    if isa in ("avx2", "avxvnni", "avxvnni_evex"):
        # the prefetching one-row Q8_0_R4T gemv but on Zen 4 (avx2/quants.cpp)
        hw = "_hw" if "avx512-halves" in _kernels.cpu_features().split() else ""
        assert rows["Q8_0"]["layout_gemv"][0] == f"{isa}::gemv_q8_0_r4t{hw}"
        # prefill reads the R4T tiles in place with the table's gemm kernels (avx2/gemm.cpp)
        for t in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
            assert rows[t]["layout_gemm"][0] == f"{isa}::gemm_{t.lower()}_r4t"
        assert rows["Q4_K"]["layout_gemm"][0] == f"{isa}::gemm_q4_K_r4"
        assert rows["Q5_K"]["layout"] == "Q5_K_R4" and rows["Q5_K"]["layout_gemm"][0] == f"{isa}::gemm_q5_K_r4"
    if isa == "avx512":  # the float types: the avx2 kernels, decode included, where 512-bit operations run in halves
        halves = "avx512-halves" in _kernels.cpu_features().split()
        for t in ("F32", "F16", "BF16"):
            assert rows[t]["vec_dot"][0] == ("avx2" if halves else "avx512") + f"::vec_dot_{t.lower()}", t
            assert rows[t]["gemv"][0] == (f"avx2::gemv_{t.lower()}" if halves else ""), t
            assert rows[t]["gemm"][0] == (f"avx2::gemm_{t.lower()}" if halves else ""), t
    if isa in ("avx2", "avxvnni", "avxvnni_evex"):  # the float types' prefill: vec_dot's values, weights shared
        for t in ("F32", "F16", "BF16"):
            assert rows[t]["gemm"] == (f"{isa}::gemm_{t.lower()}", "F32"), t
    if isa == "avx512":  # its own Q8_0 gemm (with VNNI) or the avx2 one, each with its form over the tiles
        vnni = "avx512vnni" in _kernels.cpu_features().split()
        assert rows["Q8_0"]["layout_gemm"][0] == ("avx512" if vnni else "avx2") + "::gemm_q8_0_r4t"
        for t in ("Q4_1", "Q5_0", "Q5_1"):  # over the avx2 tiles kept
            assert rows[t]["layout_gemm"][0] == ("avx512" if vnni else "avx2") + f"::gemm_{t.lower()}_r4t"
        if vnni:  # its own Q4_0 layout, the 16-row bands; Q4_K_R4 with its own K tile
            assert rows["Q4_0"]["layout_gemm"][0] == "avx512::gemm_q4_0_r16"
            assert rows["Q4_K"]["layout_gemm"][0] == "avx512::gemm_q4_K_r4"
            assert rows["Q5_K"]["layout"] == "stored" and rows["Q5_K"]["gemv"][0] == "avx512::gemv_q5_K"


@pytest.mark.parametrize("name", ["vec_dot", "gemm", "gemv"])
def test_the_activation_format_is_one_the_path_quantizes(isa, name):
    known = {"F32", "Q8_0", "Q8_1", "Q8_K", "Q8_0x4", "Q8_X8", "Q8_0F"}
    for r in _kernels.kernel_table():
        if r[name][0]:
            assert r[name][1] in known, (r["type"], name, r[name])


def test_every_kv_type_pair_has_an_attention_kernel_from_its_own_path(isa):
    rows = _kernels.attention_table()
    kv_types = ["F32", "F16", "Q8_0", "Q4_0"]
    assert [(k, v) for k, v, _ in rows] == [(k, v) for k in kv_types for v in kv_types]
    ops_from = {"avxvnni": "avx2", "avxvnni_evex": "avx2", "neon_dotprod": "neon"}  # quantized kernels only of their own
    for k, v, name in rows:
        assert name.split("::")[0] in SOURCES[isa] | {ops_from.get(isa)}, (k, v, name)
