"""Writes tests/fixtures/distill/distill.json: the distilled LM-head loss
CE + w * T^2 * KL(softmax(u/T) || softmax(s/T)) and its gradients with respect to the student's
hidden states and head, computed by PyTorch's autograd in float64 (docs/algorithm.md §7.1).

Run in a throwaway virtualenv with torch installed (never a project dependency):
    python scripts/make_distill_fixture.py
"""
import json
import pathlib

import torch
import torch.nn.functional as F

torch.manual_seed(7)
cases = []
for name, (n, d, dt, vocab, w, temp, tied) in {
    "lm_head_t2": (7, 5, 6, 13, 0.7, 2.0, False),
    "tied_t1": (9, 4, 3, 11, 1.0, 1.0, True),
}.items():
    h = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    # The student's head: [d, vocab] (a Linear's [in, out]) or a tied embedding [vocab, d].
    head = torch.randn(*((vocab, d) if tied else (d, vocab)), dtype=torch.float64) * 0.8
    head.requires_grad_(True)
    th = torch.randn(n, dt, dtype=torch.float64)
    t_head = torch.randn(vocab, dt, dtype=torch.float64) * 0.8  # the teacher's is tied
    targets = torch.randint(0, vocab, (n,))
    s = h @ (head.T if tied else head)
    u = th @ t_head.T
    ce = F.cross_entropy(s, targets)
    kl = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(u / temp, -1),
                  log_target=True, reduction="batchmean")
    loss = ce + w * temp * temp * kl
    loss.backward()
    flat = lambda t: t.detach().reshape(-1).tolist()
    cases.append({
        "name": name, "n": n, "d": d, "teacher_d": dt, "vocab": vocab,
        "weight": w, "temperature": temp, "tied": tied,
        "h": flat(h), "head": flat(head), "teacher_h": flat(th), "teacher_head": flat(t_head),
        "targets": targets.tolist(),
        "loss": loss.item(), "ce": ce.item(), "kl": kl.item(),
        "dh": flat(h.grad), "dhead": flat(head.grad),
    })
out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/distill/distill.json"
out.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1) + "\n")
print("wrote", out)
