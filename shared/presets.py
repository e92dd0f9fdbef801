"""CPU presets: per-method settings that give a useful synthetic set in minutes on a 2-core site.

A run that leaves ``iterations`` or ``batch-real`` at 0 gets its method's preset. What each preset
gives up against the paper (measured in docs/benchmarks.md):

* **DC**: 20 iterations instead of 1000, 64 real images per class per matching step instead of 256,
  inner loop 10 instead of 50, ConvNet width 64 instead of 128. The images are noisier and the
  matching has seen fewer network initialisations.
* **DM**: 400 iterations instead of 20,000 and 128 real images per class instead of 256. DM's
  iterations are cheap but it converges slowly; from noise it needs many of them.
* **IDM**: as DM (400 iterations, 128 real images per class), with a queue of 10 networks instead
  of 100, one of them trained one step of 64 real images per iteration instead of two trained 10
  steps of 256: its queued networks are less trained, which is what it costs on a CPU. Its images
  move at lr 5 instead of DM's 1.0: in a fiftieth of the paper's iterations, images started from
  noise at lr 1 stay half noise (blood cells, one 3,000-image site: balanced accuracy 0.755 at lr 1,
  0.805 at lr 5, 0.809 at lr 10; docs/benchmarks.md, "The image step from noise").
* **DPDM**: 300 iterations. Its target is fixed once (the noisy class means), so more iterations
  only fit the synthetic images closer to it; what limits the set is the noise (epsilon), not time.
* **MTT**: 200 iterations instead of 5000, 5 experts of 15 epochs instead of 100 of 50, 20 unrolled
  student steps instead of 30; the experts are trained once per site and cached.

All presets use width 64 (the run's ``net-width``), which is also the global model's network.
"""

from __future__ import annotations

from shared.methods import DistillMethod

PRESET_ITERATIONS = {DistillMethod.DC: 20, DistillMethod.DM: 400, DistillMethod.MTT: 200, DistillMethod.IDM: 400,
                     DistillMethod.DPDM: 300}
# MTT's experts see every image; DPDM uses every image once, in its one noisy release
PRESET_BATCH_REAL = {DistillMethod.DC: 64, DistillMethod.DM: 128, DistillMethod.IDM: 128}
# a method not named keeps its config's own image lr
PRESET_LR_IMG = {DistillMethod.IDM: 5.0}
