"""LiTS evaluation of predicted masks: python tools/evaluate.py --pred_dir P --ref_dir R --output_dir O.

Pairs `NAME.nii[.gz]` (or DICOM SEG `NAME.dcm`, with --dicom_dir) files of the two folders by
name and writes O/cases.csv, O/lesions.csv, O/summary.json, O/overlays/*.png and, with --report, O/report.html (see
liverzoo/evaluation.py and docs/inference.md).
"""
import sys

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

# No cli.quiet_tensorflow() here: evaluation never imports TensorFlow (NumPy, SciPy,
# nibabel, matplotlib only), and quiet_tensorflow would import it just to silence it.

FLAGS = flags.FLAGS
flags.DEFINE_string("pred_dir", None, "Folder of predicted label maps (NAME.nii or NAME.nii.gz).")
flags.DEFINE_string("ref_dir", None, "Folder of reference label maps with the same names.")
flags.DEFINE_string("output_dir", None, "Where cases.csv, summary.json and overlays/ are written.")
flags.DEFINE_string("image_dir", None, "Optional folder of the CTs to draw the overlays on: CASE.nii[.gz] or a "
                    "DICOM series folder CASE/ (default: the series a DICOM SEG references, else none).")
flags.DEFINE_string("dicom_dir", None, "The DICOM series that SEG (NAME.dcm) files reference: DICOM_DIR/NAME/ per "
                    "case, or one series folder.")
flags.DEFINE_bool("skip_bad", False, "Skip and list cases that cannot be evaluated instead of failing.")
flags.DEFINE_integer("num_overlays", 3, "Number of worst cases (by liver Dice) to draw.", lower_bound=0)
flags.DEFINE_integer("overlay_slices", 2, "Slices drawn per worst case.", lower_bound=1)
flags.DEFINE_float("min_overlap", 0.5, "A lesion is detected iff its IoU is greater (LiTS: 0.5 and 0).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("merge_fragments", False, "Count reference fragments one voxel apart in-plane as one lesion.")
flags.DEFINE_bool("report", False, "Also write the self-contained report.html.")


def main(argv):
    from liverzoo import evaluation, report
    from liverzoo.errors import ConfigError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("pred_dir", "ref_dir", "output_dir"):
        if not FLAGS[name].value:
            raise ConfigError(f"--{name} is required")

    def progress(index, total, case):
        print(f"case {index + 1}/{total} {case}", file=sys.stderr, flush=True)

    summary = evaluation.evaluate(FLAGS.pred_dir, FLAGS.ref_dir, FLAGS.output_dir, image_dir=FLAGS.image_dir,
                                  dicom_dir=FLAGS.dicom_dir,
                                  skip_bad=FLAGS.skip_bad, num_overlays=FLAGS.num_overlays,
                                  overlay_slices=FLAGS.overlay_slices, min_overlap=FLAGS.min_overlap,
                                  merge_fragments=FLAGS.merge_fragments, report=FLAGS.report, progress=progress)
    for skipped in summary["skipped"]:
        print(f"skipped: {skipped['error']}", file=sys.stderr)
    print("\n".join(report.summary_lines(summary)))
    extra = ", report.html" if FLAGS.report else ""
    print(f"wrote {FLAGS.output_dir}/cases.csv, lesions.csv, summary.json{extra}, {len(summary['overlays'])} overlays")

if __name__ == "__main__":
    cli.run(main)
