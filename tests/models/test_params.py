"""Parameter counts at the paper's input size: pinned exactly, and against the paper's figure.

Rows: `(name, builder kwargs as sorted (key, value) pairs) -> (exact count, paper count,
relative tolerance)`. The exact count pins the architecture (any change to it must update
this table and docs/models.md); the paper comparison runs where the tolerance is not None.

- residual_unet: the paper (002_7138868b57b69ed8.txt, Sec. VI) reports "2 million"; the
  literal reading of its text (see `build_residual_unet`) gives 5.3 M. Not compared: the
  paper has no layer table from which its 2 M could be rebuilt. Its U-Net baseline ("around
  30 million") is compared within 15% to the same topology with standard convs (33.1 M).
- ds_nnunet / nnunet_2d: 7.7 M and 41 M (000_ebe0050d52f538d0.txt, Sec. III-B, Table I),
  within 10% as issue 3 demands.
- deeplabv3plus: the LW-HCN paper reports no size for it; pinned only.
- lw_hcn: Table 1 of 001_bb2d5e6c0ac559d5.txt (dsts 3.6 M, standard 38.6 M, STS(sequ) 19.4 M,
  STS(pa) 20.8 M), within 15%; the paper prints no widths, ours are chosen so that one set of
  widths meets all four (docs/lw_hcn.md).
"""
import pytest

from liverzoo import models

PARAMS = {
    ("residual_unet", ()): (5_298_544, 2_000_000, None),
    ("residual_unet", (("separable", False),)): (33_075_271, 30_000_000, 0.15),
    ("ds_nnunet", ()): (7_750_047, 7_700_000, 0.10),
    ("ds_nnunet", (("deep_supervision", False),)): (7_745_823, 7_700_000, 0.10),
    ("nnunet_2d", ()): (41_262_912, 41_000_000, 0.10),
    ("deeplabv3plus", ()): (41_043_283, None, None),
    ("lw_hcn", ()): (3_308_163, 3_600_000, 0.15),
    ("lw_hcn", (("conv_type", "standard"),)): (38_644_771, 38_600_000, 0.15),
    ("lw_hcn", (("conv_type", "sts_seq"),)): (18_627_619, 19_400_000, 0.15),
    ("lw_hcn", (("conv_type", "sts_par"),)): (21_220_387, 20_800_000, 0.15),
    # 004_e35520e2e41b14d6.txt, Table 3 (trainable counts, liver only; here all weights, 3 classes;
    # tests/models/test_lv_net.py and test_baselines3d.py compare trainable counts at 2 classes).
    ("lv_net", ()): (1_787_151, 1_659_282, 0.10),
    ("lv_net", (("num_classes", 2),)): (1_786_778, 1_659_282, 0.10),
    ("vnet", ()): (65_185_715, 65_173_903, 0.001),
    ("unet3d", ()): (16_325_059, 16_320_322, 0.001),
    # 003_1722e7be9c09b159.txt reports no size: pinned only (hand counts in tests/models/test_ynet3d.py).
    ("ynet3d", ()): (185_923_651, None, None),
    ("ynet3d_ee", ()): (169_445_443, None, None),
}


def _count(name, kwargs):
    kwargs = dict(kwargs)
    kwargs.setdefault("input_shape", models.SPECS[name].paper_input_shape)
    return models.build(name, **kwargs).count_params()


@pytest.mark.parametrize("key", list(PARAMS), ids=lambda key: "-".join([key[0]] + [f"{k}={v}" for k, v in key[1]]))
def test_parameter_count(key):
    name, kwargs = key
    exact, paper, tolerance = PARAMS[key]
    count = _count(name, kwargs)
    assert count == exact, f"{name}{dict(kwargs)}: {count:,} parameters, pinned {exact:,}"
    if tolerance is not None:
        assert abs(count - paper) <= tolerance * paper, f"{name}: {count:,} vs paper {paper:,} (+-{tolerance:.0%})"


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_is_pinned_with_the_paper_figure_of_its_spec(name):
    rows = [value for (row_name, kwargs), value in PARAMS.items() if row_name == name and not kwargs]
    assert rows, f"add a PARAMS row for {name!r} with its default options"
    assert rows[0][1] == models.SPECS[name].paper_params
