"""The rules of the claims about GANs: a conditional GAN's digits improve as it trains until they are
recognisable (`gan-digits`), and generated images improve from era to era, along the course's
timeline (`gan-progress`) and along the five systems of the slides' figure (`gan-slides`), every
era scored the same way (`gan_entries`, `gan_progress_table`, `timeline_verdict`).

Each bar is fixed here, before the data it judges is seen; each rule is named after its claim's id
and gives (measured, values, holds). The claims' texts, built from these bars, are in `claims`."""

from __future__ import annotations

from .results import Results
from .verdicts import floor, pct

GAN_CONFIDENT_MIN = 0.9  # the least classifier confidence that counts a sample as recognisable
GAN_RECOGNISABLE = 0.9  # of the samples
GAN_AGREEMENT = 0.9  # a conditional GAN's samples read as the digit asked for
# "les images générées s'améliorent", 2014 -> 2019: the eras whose Fréchet distances must decrease, oldest first
GAN_TIMELINE = ("gan-2014", "dcgan-2015", "stylegan-2019")
# ... and the five systems of the slides' own figure ("GAN progress on face generation"): 2014 Goodfellow et
# al., 2015 Radford et al., 2016 Liu and Tuzel (coupled GANs: judged on its first domain, the digits), 2017
# Karras et al. (progressive growing), 2019 Karras et al.; each year's Fréchet distance below the year before
GAN_SLIDES = ("gan-2014", "dcgan-2015", "cogan-2016", "progan-2017", "stylegan-2019")
GAN_GOAL_CONFIDENT = 0.9  # beyond the course (reported, not judged): the best unconditional entry's samples
GAN_GOAL_RAREST_DIGIT = 0.07  # ... and the smallest share of any digit among them


def gan_entries(r: Results) -> dict[str, dict]:
    """Each train-gan entry's scores (metrics/gan/<entry>/scores.json), by entry."""
    return {entry: r.metrics(f"gan/{entry}/scores") for entry in r.names("gan")}


def gan_digits(r: Results):
    conditional = {name: m for name, m in gan_entries(r).items() if m["conditional"]}
    if not conditional:
        return "no conditional train-gan entry was scored", {}, False
    name, m = next(iter(conditional.items()))
    bar = floor(m["confident_threshold"], GAN_CONFIDENT_MIN, "score_gan.confident")
    first, last, final, real = m["first_epoch"], m["last_epoch"], m["generated"], m["real"]
    improved = last["frechet_distance"] < first["frechet_distance"] and \
        last["confident_fraction"] > first["confident_fraction"]
    recognisable = final["confident_fraction"] >= GAN_RECOGNISABLE
    agreement = final.get("label_agreement")  # a conditional entry's: without it, the digit asked is unchecked
    asked = agreement is not None and agreement >= GAN_AGREEMENT
    measured = (
        f"`{name}`, epoch {first['epoch']} → {last['epoch']} ({m['curve_samples']} samples each): Fréchet distance "
        f"{first['frechet_distance']:.2f} → {last['frechet_distance']:.2f}, classified with confidence >= {bar:g}: "
        f"{pct(first['confident_fraction'])} → {pct(last['confident_fraction'])}; the last epoch on {m['samples']} "
        f"samples: {pct(final['confident_fraction'])} (real test set: {pct(real['test_confident_fraction'])}), "
        f"Fréchet distance {final['frechet_distance']:.2f} (real train vs test: {real['frechet_distance']:.2f}), "
        f"Inception-Score analogue {final['inception_score']:.2f} (real: {real['inception_score']:.2f})"
        + (f"; class-conditional: the classifier reads the digit asked for in {pct(agreement)}"
           if agreement is not None else "; the digit asked for was not measured (no label_agreement)"))
    values = {"entry": name, "first_epoch": first, "last_epoch": last, "generated": final, "real": real,
              "improved": improved, "recognisable": recognisable, "reads_the_digit_asked_for": asked}
    return measured, values, improved and recognisable and asked


def gan_progress_table(entries: dict[str, dict]) -> list[dict]:
    """The unconditional entries in timeline order, each with its scores and whether it improved on
    the previous era's Fréchet distance."""
    rows, previous = [], None
    for name, m in sorted(((n, m) for n, m in entries.items() if not m["conditional"]), key=lambda e: e[1]["year"]):
        g = m["generated"]
        rows.append({"entry": name, "era": m["era"], "year": m["year"], "method": m["method"],
                     "generator_images": m["generator_images"], "frechet_distance": g["frechet_distance"],
                     "precision": g["precision"], "recall": g["recall"], "confident_fraction": g["confident_fraction"],
                     "rarest_class_share": g["rarest_class_share"], "inception_score": g["inception_score"],
                     "improved_on_previous": None if previous is None else g["frechet_distance"] < previous})
        previous = g["frechet_distance"]
    return rows


def timeline_verdict(entries: dict[str, dict], timeline: tuple[str, ...]) -> dict:
    """The unconditional entries' rows (`gan_progress_table`), and for the eras of `timeline`: their Fréchet
    distances, whether they decrease along it, whether every unconditional entry saw the same images
    (dataset, images per generator, samples scored); `missing`: the eras of `timeline` not scored."""
    rows = gan_progress_table(entries)
    by_era = {row["era"]: row for row in rows}
    missing = [era for era in timeline if era not in by_era]
    for m in entries.values():
        floor(m["confident_threshold"], GAN_CONFIDENT_MIN, "score_gan.confident")
    budgets = {(m["dataset"], m["generator_images"], m["samples"]) for m in entries.values() if not m["conditional"]}
    distances = [by_era[era]["frechet_distance"] for era in timeline if era in by_era]
    return {"rows": rows, "missing": missing, "budgets": budgets, "same_budget": len(budgets) == 1,
            "distances": distances, "ordered": not missing and all(b < a for a, b in zip(distances, distances[1:]))}


def _timeline_steps(rows: list[dict]) -> str:
    return "; ".join(
        f"{row['year']} {row['method']} {row['frechet_distance']:.2f} (precision {row['precision']:.2f}, recall "
        f"{row['recall']:.2f}, confident {pct(row['confident_fraction'])}, rarest digit "
        f"{pct(row['rarest_class_share'])})" + ("" if row["improved_on_previous"] is None else
                                                 " improved" if row["improved_on_previous"] else " did not improve")
        for row in rows)


def gan_progress(r: Results):
    entries = gan_entries(r)
    t = timeline_verdict(entries, GAN_TIMELINE)
    rows, budgets, same_budget, distances, ordered = t["rows"], t["budgets"], t["same_budget"], t["distances"], t["ordered"]
    if t["missing"]:
        return f"no scores for the era(s) {', '.join(t['missing'])}", {"eras": rows}, False
    best = min(rows, key=lambda row: row["frechet_distance"])
    goal = {row["entry"]: row["confident_fraction"] >= GAN_GOAL_CONFIDENT
            and row["rarest_class_share"] >= GAN_GOAL_RAREST_DIGIT for row in rows}
    real = next(iter(entries.values()))["real"]
    measured = (f"Fréchet distance by era ({', '.join(sorted({str(b[1]) for b in budgets}))} images seen by each "
                f"generator; real train vs test: {real['frechet_distance']:.2f}): {_timeline_steps(rows)}. "
                + ("" if same_budget else "The eras' budgets differ: the comparison does not hold. ")
                + f"Beyond the course, the best entry ({best['entry']}): {pct(best['confident_fraction'])} of samples "
                f"confident, rarest digit {pct(best['rarest_class_share'])} (goal: >= {100 * GAN_GOAL_CONFIDENT:g} % "
                f"and every digit >= {100 * GAN_GOAL_RAREST_DIGIT:g} %: "
                + (f"met by {', '.join(e for e, met in goal.items() if met)})" if any(goal.values()) else "not met)"))
    values = {"eras": rows, "timeline": list(GAN_TIMELINE), "frechet_distances": dict(zip(GAN_TIMELINE, distances)),
              "ordered": ordered, "same_budget": same_budget, "goal_met_by": [e for e, met in goal.items() if met]}
    return measured, values, ordered and same_budget


def gan_slides(r: Results):
    entries = gan_entries(r)
    t = timeline_verdict(entries, GAN_SLIDES)
    if t["missing"]:
        return f"no scores for the era(s) {', '.join(t['missing'])}", {"eras": t["rows"]}, False
    by_era = {row["era"]: row for row in t["rows"]}
    steps = "; ".join(f"{by_era[era]['year']} {by_era[era]['method']} {d:.2f}"
                      + ("" if i == 0 else " improved" if d < t["distances"][i - 1] else " did not improve")
                      for i, (era, d) in enumerate(zip(GAN_SLIDES, t["distances"])))
    real = next(iter(entries.values()))["real"]
    measured = (f"Fréchet distance along the slides' years ({', '.join(sorted({str(b[1]) for b in t['budgets']}))} "
                f"images seen by each generator; real train vs test: {real['frechet_distance']:.2f}): {steps}"
                + ("" if t["same_budget"] else ". The eras' budgets differ: the comparison does not hold"))
    values = {"timeline": list(GAN_SLIDES), "frechet_distances": dict(zip(GAN_SLIDES, t["distances"])),
              "ordered": t["ordered"], "same_budget": t["same_budget"],
              "best": min(GAN_SLIDES, key=lambda era: by_era[era]["frechet_distance"])}
    return measured, values, t["ordered"] and t["same_budget"]
