"""matplotlib figures for the lessons and the report, one function per figure, named for what it shows. Each
takes plain arrays and returns a Figure; saving is the caller's business (lesson.savefig). Nothing here
computes anything a test relies on.

    plots/toy.py        the toy world (lessons 01-03): superposition, the SAE on the toy, known features, the sweep
    plots/language.py   the language model (lessons 04-08): the transformer, its SAE, features, steering
    plots/variants.py   lesson 09: the SAE variants on the known features and on the transformer
    plots/universality.py  lesson 10: two transformers, the shuffled-weights baseline
    plots/panel.py      what both share: a panel that says why it is empty
    plots/bench.py      `bench scaling`: how the SAE step and the transformer's step grow

A lesson calls them as plots.NAME; the names are gathered here."""
from tinymono.plots.bench import scaling
from tinymono.plots.language import (attention_pieces, bits_per_label, context_feature_histograms, density_histogram,
                                     feature_split_by_base, features_vs_neurons_bars, features_vs_neurons_scatter,
                                     memorising, over_floor, pinned_sampling, sae_training, transformer_loss_curve)
from tinymono.plots.panel import empty_panel
from tinymono.plots.toy import (best_cosines, best_cosines_compared, decoder_rows_vs_true, density_vs_true,
                                dimensionality, feature_directions, gradcheck_errors, gram_and_norms, gt_training,
                                latent_responses, phase_diagram, sweep_heatmaps, sweep_tradeoff, toy_activations,
                                training_runs)
from tinymono.plots.universality import best_match_histograms, real_vs_shuffled
from tinymono.plots.variants import variants_frontier, variants_scores

__all__ = ["attention_pieces", "best_cosines", "best_cosines_compared", "best_match_histograms", "bits_per_label",
           "context_feature_histograms", "decoder_rows_vs_true", "density_histogram", "density_vs_true",
           "dimensionality", "empty_panel", "feature_directions", "feature_split_by_base", "features_vs_neurons_bars",
           "features_vs_neurons_scatter", "gradcheck_errors", "gram_and_norms", "gt_training", "latent_responses",
           "memorising", "over_floor", "phase_diagram", "pinned_sampling", "real_vs_shuffled", "sae_training",
           "scaling", "sweep_heatmaps", "sweep_tradeoff", "toy_activations", "training_runs", "transformer_loss_curve",
           "variants_frontier", "variants_scores"]
