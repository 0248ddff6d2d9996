// The enums and the optimizer-step record that cross the Python/C++ seam,
// registered once in fusednn._C. fusednn._C_cuda imports fusednn._C first and
// takes the same types, so Python names a member (fusednn._C.Act.Elu) or a
// field (step.beta_1) and never repeats a number that C++ defines.
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <utility>

#include "bindings/registry.h"
#include "fusednn/activation.h"
#include "fusednn/batchnorm.h"
#include "fusednn/loss.h"
#include "fusednn/optimizer.h"

namespace py = pybind11;

namespace {

// One py::enum_ from (name, member) pairs: the members are listed once, here.
template <typename E>
void bind_enum(py::module_& m, const char* name, const char* doc,
               std::initializer_list<std::pair<const char*, E>> members) {
  py::enum_<E> e(m, name, doc);
  for (const auto& [member, value] : members) e.value(member, value);
}

void register_types(py::module_& m) {
  using fusednn::Act;
  bind_enum<Act>(m, "Act", "Activation kernels (fusednn/activation.h).",
                 {{"Linear", Act::Linear}, {"Relu", Act::Relu}, {"LeakyRelu", Act::LeakyRelu},
                  {"Elu", Act::Elu}, {"Selu", Act::Selu}, {"Gelu", Act::Gelu},
                  {"GeluTanh", Act::GeluTanh}, {"Swish", Act::Swish}, {"Mish", Act::Mish},
                  {"Sigmoid", Act::Sigmoid}, {"Tanh", Act::Tanh}, {"Softplus", Act::Softplus}});
  using fusednn::BnConvention;
  bind_enum<BnConvention>(m, "BnConvention",
                          "How momentum updates the moving statistics (fusednn/batchnorm.h).",
                          {{"Keras", BnConvention::Keras}, {"Torch", BnConvention::Torch}});
  using fusednn::PointLoss;
  bind_enum<PointLoss>(m, "PointLoss", "Element-wise losses (fusednn/loss.h).",
                       {{"SigmoidBCE", PointLoss::SigmoidBCE}, {"MSE", PointLoss::MSE}});
  using fusednn::Opt;
  bind_enum<Opt>(m, "Opt", "Optimizer update rules (fusednn/optimizer.h).",
                 {{"SGD", Opt::SGD}, {"Adagrad", Opt::Adagrad}, {"RMSprop", Opt::RMSprop},
                  {"Adam", Opt::Adam}, {"Adamax", Opt::Adamax}, {"Nadam", Opt::Nadam},
                  {"Ftrl", Opt::Ftrl}});
  using fusednn::Clip;
  bind_enum<Clip>(m, "Clip", "Gradient clipping modes, one at most (fusednn/optimizer.h).",
                  {{"Off", Clip::Off}, {"Value", Clip::Value}, {"Norm", Clip::Norm},
                   {"Global", Clip::Global}});

  using Step = fusednn::OptStep<double>;
  py::class_<Step> step(m, "OptStep",
                        "The scalars of one optimizer step (fusednn::OptStep): zero-initialised; "
                        "each rule sets the fields it reads.");
  step.def(py::init<>());
  using Field = std::pair<const char*, double Step::*>;
  for (const auto& [name, field] : std::initializer_list<Field>{
           {"lr", &Step::lr}, {"beta_1", &Step::beta_1}, {"beta_2", &Step::beta_2},
           {"rho", &Step::rho}, {"momentum", &Step::momentum}, {"epsilon", &Step::epsilon},
           {"step_size", &Step::step_size}, {"m_weight", &Step::m_weight},
           {"g_weight", &Step::g_weight}, {"v_correction", &Step::v_correction},
           {"decay", &Step::decay}, {"clipvalue", &Step::clipvalue}, {"l1", &Step::l1},
           {"l2", &Step::l2}, {"shrinkage", &Step::shrinkage}, {"lr_power", &Step::lr_power}})
    step.def_readwrite(name, field);
  step.def_readwrite("nesterov", &Step::nesterov)
      .def_readwrite("centered", &Step::centered)
      .def_readwrite("amsgrad", &Step::amsgrad);
}

const fusednn::bind::Registrar reg(register_types);

}  // namespace
