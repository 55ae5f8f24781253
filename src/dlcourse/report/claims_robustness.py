"""The rules of the claims about what a network is not robust to: a slight corruption of the images
(adversarial examples) and strange images made to fool it, for the networks trained the course's way;
and, beyond the course, a network trained on its own adversarial examples (`robust-training`).

Each bar is fixed here (the slight-corruption rule's in `course.attacks`), before the data it judges
is seen; each rule is named after its claim's id and gives (measured, values, holds). The claims'
texts, built from these bars, are in `claims`."""

from __future__ import annotations

from ..course.attacks import choose_slight_eps, drop, noise_drop, slight_and_wrecking
from ..files import rebuild_hint
from ..pipeline.layout import FOOLING_METHODS
from .results import ClaimError, Results
from .verdicts import floor, pct, require_finite

FOOLING_MIN = 0.99  # the least confidence that counts as "une grande confiance"
# Beyond the course, the adversarially trained MNIST network (`robust-training`), its bars from the
# literature at L-inf eps 0.3: Madry et al. 2018 (PGD training), about 89 % under a strong white-box
# attack, 98.8 % clean; Wong, Rice and Kolter 2020 (FGSM from a random start), 88.8 % under PGD-50 with
# 10 restarts, 98.5 % clean. The bars allow 4 and 0.5-0.8 points for a network trained in minutes on a CPU.
ROBUST_EPS = 0.3
ROBUST_BAR = 0.85  # worst case of the strong PGD and the independent APGD, on the attacked test images
ROBUST_CLEAN_BAR = 0.98  # on the whole test set
ROBUST_CONFIRMATION = 0.02  # the independent attack agrees with ours within 2 points


def slight_corruption_verdict(m: dict) -> dict:
    """One attacked model's verdict: the eps chosen on the selection half, judged on the evaluation half."""
    require_finite(m["selection"]["accuracy"], "slight-corruption: the selection half's accuracies")
    require_finite(m["evaluation"]["accuracy"], "slight-corruption: the evaluation half's accuracies")
    if not m["evaluation"]["accuracy"] or not m["selection"]["accuracy"]:
        raise ClaimError("slight-corruption: an attacked model's metrics hold no accuracy sweep")
    selection = {float(eps): row for eps, row in m["selection"]["accuracy"].items()}
    evaluation = {float(eps): row for eps, row in m["evaluation"]["accuracy"].items()}
    eps = choose_slight_eps(selection)
    holds_at = slight_and_wrecking(evaluation)
    psnr = m["evaluation"]["psnr_db"][f"{eps:g}"]
    return {"eps": eps, "images": m["images"], "clean": evaluation[0.0]["pgd"], "pgd": evaluation[eps]["pgd"],
            "pgd_drop": drop(evaluation, eps, "pgd"), "noise_drop": noise_drop(evaluation, eps),
            "psnr_db": {"pgd": psnr["pgd"], "sign_noise": psnr["sign_noise"], "l2_noise": psnr["l2_noise"]},
            "eps_where_it_holds": [e for e, holds in holds_at.items() if holds], "holds": holds_at[eps]}


def adversarially_trained(r: Results, model: str) -> bool:
    """Whether a trained model ("cnn/mnist-robust") was trained on adversarial examples: beyond the
    course, left out of the course's own claims (slight-corruption, fooling) and judged by robust-training."""
    return model.startswith("cnn/") and "adversarial" in r.metrics(model)


def slight_corruption(r: Results):
    verdicts = {name: slight_corruption_verdict(m) for name, m in r.per_model("attack").items()
                if not adversarially_trained(r, name)}
    parts = [f"{name}, eps {v['eps']:g} chosen on {v['images']['selection']} images, judged on "
             f"{v['images']['evaluation']} others: {pct(v['clean'])} → {pct(v['pgd'])} under PGD (PSNR "
             f"{v['psnr_db']['pgd']:.1f} dB), random noise of the same size costs {100 * v['noise_drop']:.1f} points "
             f"(PSNR {v['psnr_db']['sign_noise']:.1f} dB); holds at eps "
             f"{', '.join(f'{e:g}' for e in v['eps_where_it_holds']) or 'none'}"
             for name, v in verdicts.items()]
    return "; ".join(parts), verdicts, bool(verdicts) and all(v["holds"] for v in verdicts.values())


def robust_training(r: Results):
    robust = [name for name in r.names("attack") if adversarially_trained(r, name)]
    if not robust:
        return ("no attacked model was trained on adversarial examples (params.yaml: a train_cnn entry with "
                "`adversarial`, in attack.models with robust_eps)", {}, False)
    verdicts, parts = {}, []
    for name in robust:
        attacked, trained = r.metrics(f"attack/{name}"), r.metrics(name)
        if "robust" not in attacked:
            raise ClaimError(f"robust-training: metrics/attack/{name}.json holds no robust accuracy "
                             f"(params.yaml: attack.models.{name}.robust_eps)")
        m = require_finite(attacked["robust"], f"robust-training: {name}'s robust accuracies")
        if m["eps"] != ROBUST_EPS:
            raise ClaimError(f"robust-training: {name} is attacked at eps {m['eps']:g}; the bars are the "
                             f"literature's at eps {ROBUST_EPS:g} (attack.models.{name}.robust_eps)")
        slight = slight_corruption_verdict(attacked)
        v = {"eps": m["eps"], "images": m["images"], "robust": m["worst_case"], "pgd": m["pgd"], "apgd": m["apgd"],
             "clean": trained["test_accuracy"], "training": trained["adversarial"]["method"],
             "slight_corruption_holds": slight["holds"], "slight_corruption_pgd_drop": slight["pgd_drop"]}
        v["confirmed"] = abs(m["apgd"] - m["pgd"]) <= ROBUST_CONFIRMATION
        v["holds"] = (v["robust"] >= ROBUST_BAR and v["clean"] >= ROBUST_CLEAN_BAR and v["confirmed"]
                      and not v["slight_corruption_holds"])
        verdicts[name] = v
        parts.append(f"{name} ({v['training']}): {pct(v['robust'])} robust at eps {v['eps']:g} on {v['images']} test "
                     f"images (PGD-{m['pgd_steps']} x {m['pgd_restarts']} restarts {pct(v['pgd'])}, APGD-"
                     f"{m['apgd_steps']} {pct(v['apgd'])}), {pct(v['clean'])} clean; the slight-corruption rule "
                     + ("still holds" if v["slight_corruption_holds"] else "no longer holds")
                     + f" (PGD costs {100 * v['slight_corruption_pgd_drop']:.1f} points at the eps it chooses)")
    return "; ".join(parts), verdicts, all(v["holds"] for v in verdicts.values())


def fooling(r: Results):
    verdicts, parts = {}, []
    for dataset in r.names("fooling"):
        path = r.metrics_dir / "fooling" / f"{dataset}.json"
        m = r.metrics(f"fooling/{dataset}")
        if adversarially_trained(r, m["model"]):
            continue
        bar = floor(m["confidence_bar"], FOOLING_MIN, f"fooling.{path.stem}.confidence")
        missing = [method for method in FOOLING_METHODS if method not in m]
        if missing:
            raise ClaimError(f"{path}: no results for the fooling method(s) {', '.join(missing)}; "
                             "rerun the fooling stage")
        methods = {}
        for method in FOOLING_METHODS:
            per_class = require_finite(m[method]["per_class"], f"{path}: {method}.per_class")
            if not per_class:  # all() over no class would be true
                raise ClaimError(f"{path}: {method}.per_class is empty; {rebuild_hint(path)}")
            methods[method] = {
                "reaches_every_class": all(c["confidence"] >= bar for c in per_class.values()),
                "short_of_the_bar": {name: c["confidence"] for name, c in per_class.items() if c["confidence"] < bar},
                "png_bytes_mean": m[method]["png_bytes_mean"],
                "total_variation_mean": m[method]["total_variation_mean"],
                "transfer_confidence_mean": m[method]["transfer_confidence_mean"]}
        reached = [method for method, v in methods.items() if v["reaches_every_class"]]
        regular = methods["cppn"]["png_bytes_mean"] < methods["evolution"]["png_bytes_mean"]
        verdicts[path.stem] = {"model": m["model"], "bar": bar, "methods_reaching_every_class": reached,
                               "cppn_more_regular_than_direct_encoding": regular, "methods": methods}
        short = "; ".join(f"{method} short on {', '.join(f'{k} {pct(c)}' for k, c in v['short_of_the_bar'].items())}"
                          for method, v in methods.items() if v["short_of_the_bar"])
        parts.append(
            f"{path.stem} ({m['model']}, confidence >= {bar:g}): every class reached by "
            f"{' and '.join(reached) if reached else 'no method'} (of {', '.join(FOOLING_METHODS)})"
            + (f" ({short})" if short else "") + "; PNG bytes per image: "
            + ", ".join(f"{method} {v['png_bytes_mean']:.0f}" for method, v in methods.items())
            + "; total variation: " + ", ".join(f"{method} {v['total_variation_mean']:.3f}"
                                                for method, v in methods.items())
            + "; second network's mean confidence: " + ", ".join(
                f"{method} {pct(v['transfer_confidence_mean'])}" for method, v in methods.items()))
    holds = bool(verdicts) and all(v["methods_reaching_every_class"] and v["cppn_more_regular_than_direct_encoding"]
                                   for v in verdicts.values())
    return "; ".join(parts), verdicts, holds
