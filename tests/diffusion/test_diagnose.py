"""Diagnosis of a synthesizer: the one-step x0 prediction and the reconstruction report."""


def test_predict_x0_inverts_the_forward_process_for_each_parameterisation():
    import torch
    from diffusers import DDPMScheduler

    from tailsynth.diffusion.diagnose import predict_x0

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([10, 200, 500, 900])
    for pt in ("v_prediction", "epsilon", "sample"):
        s = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=pt)
        xt = s.add_noise(x0, eps, t)
        target = {"v_prediction": s.get_velocity(x0, eps, t), "epsilon": eps, "sample": x0}[pt]
        torch.testing.assert_close(predict_x0(s, xt, t, target, pt), x0, atol=2e-4, rtol=1e-3)


def test_reconstruction_report_has_ema_raw_and_null_label(tiny_model):
    from tailsynth.diffusion.diagnose import reconstruction_report

    model, data = tiny_model
    rep = reconstruction_report(model, data, n=8, timesteps=(100, 500))
    for k in ("ema", "raw", "ema_null_label"):
        assert set(rep[k]) == {100, 500} and all(0 <= v < 4 for v in rep[k].values())
