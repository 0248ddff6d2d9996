// The enums and the optimizer-step record that cross the Python/C++ seam,
// registered once in fusednn._C. fusednn._C_cuda imports fusednn._C first and
// takes the same types, so Python names a member (fusednn._C.Act.Elu) or a
// field (step.beta_1) and never repeats a number that C++ defines.
#include <pybind11/pybind11.h>

#include "bindings/registry.h"
#include "fusednn/activation.h"
#include "fusednn/batchnorm.h"
#include "fusednn/loss.h"
#include "fusednn/optimizer.h"

namespace py = pybind11;

namespace {

void register_types(py::module_& m) {
  using fusednn::Act;
  py::enum_<Act>(m, "Act", "Activation kernels (fusednn/activation.h).")
      .value("Linear", Act::Linear)
      .value("Relu", Act::Relu)
      .value("LeakyRelu", Act::LeakyRelu)
      .value("Elu", Act::Elu)
      .value("Selu", Act::Selu)
      .value("Gelu", Act::Gelu)
      .value("GeluTanh", Act::GeluTanh)
      .value("Swish", Act::Swish)
      .value("Mish", Act::Mish)
      .value("Sigmoid", Act::Sigmoid)
      .value("Tanh", Act::Tanh)
      .value("Softplus", Act::Softplus);

  using fusednn::BnConvention;
  py::enum_<BnConvention>(m, "BnConvention",
                          "How momentum updates the moving statistics (fusednn/batchnorm.h).")
      .value("Keras", BnConvention::Keras)
      .value("Torch", BnConvention::Torch);

  using fusednn::PointLoss;
  py::enum_<PointLoss>(m, "PointLoss", "Element-wise losses (fusednn/loss.h).")
      .value("SigmoidBCE", PointLoss::SigmoidBCE)
      .value("MSE", PointLoss::MSE);

  using fusednn::Opt;
  py::enum_<Opt>(m, "Opt", "Optimizer update rules (fusednn/optimizer.h).")
      .value("SGD", Opt::SGD)
      .value("Adagrad", Opt::Adagrad)
      .value("RMSprop", Opt::RMSprop)
      .value("Adam", Opt::Adam)
      .value("Adamax", Opt::Adamax)
      .value("Nadam", Opt::Nadam)
      .value("Ftrl", Opt::Ftrl);

  using fusednn::Clip;
  py::enum_<Clip>(m, "Clip", "Gradient clipping modes, one at most (fusednn/optimizer.h).")
      .value("Off", Clip::Off)
      .value("Value", Clip::Value)
      .value("Norm", Clip::Norm)
      .value("Global", Clip::Global);

  using Step = fusednn::OptStep<double>;
  py::class_<Step>(m, "OptStep",
                   "The scalars of one optimizer step (fusednn::OptStep): zero-initialised; "
                   "each rule sets the fields it reads.")
      .def(py::init<>())
      .def_readwrite("lr", &Step::lr)
      .def_readwrite("beta_1", &Step::beta_1)
      .def_readwrite("beta_2", &Step::beta_2)
      .def_readwrite("rho", &Step::rho)
      .def_readwrite("momentum", &Step::momentum)
      .def_readwrite("epsilon", &Step::epsilon)
      .def_readwrite("step_size", &Step::step_size)
      .def_readwrite("m_weight", &Step::m_weight)
      .def_readwrite("g_weight", &Step::g_weight)
      .def_readwrite("v_correction", &Step::v_correction)
      .def_readwrite("decay", &Step::decay)
      .def_readwrite("clipvalue", &Step::clipvalue)
      .def_readwrite("l1", &Step::l1)
      .def_readwrite("l2", &Step::l2)
      .def_readwrite("shrinkage", &Step::shrinkage)
      .def_readwrite("lr_power", &Step::lr_power)
      .def_readwrite("nesterov", &Step::nesterov)
      .def_readwrite("centered", &Step::centered)
      .def_readwrite("amsgrad", &Step::amsgrad);
}

const fusednn::bind::Registrar reg(register_types);

}  // namespace
