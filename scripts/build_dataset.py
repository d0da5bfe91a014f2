"""Build the bundled dataset: jobrl_async/assets/job_offer_dataset.json.

The seed's S3 dataset is private, so we ship our own, with the seed's shape and spread:
534 contexts `{"context": {"job_title", "language", "skills": [3-5], "industry"}}`,
industries Tech 30 %, Healthcare 15 %, Finance 15 %, Manufacturing 10 % and the other 30 %
spread evenly over ten more, about 55 % English and 45 % French.

Each record is drawn from the authored tables below: an industry and language hold real job
titles, each title a pool of 8-15 skills that belong to that job; a record takes 3-5 skills of
one title's pool. French tables are written as a French recruiter would write them (tool
names stay as they are). A seeded `random.Random` makes the output byte-identical run to run.

    python scripts/build_dataset.py            # (re)write the bundled file
    python scripts/build_dataset.py --check    # exit 1 if the file on disk is stale
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

SEED = 534
TOTAL_RECORDS = 534
SKILLS_PER_RECORD = (3, 4, 5)
POOL_SIZE = range(8, 16)  # skills authored per title
LANGUAGE_SHARES = {"en": 0.55, "fr": 0.45}
MAIN_INDUSTRY_SHARES = {"Tech": 0.30, "Healthcare": 0.15, "Finance": 0.15, "Manufacturing": 0.10}
MAX_DRAWS_PER_RECORD = 200  # tries to find a skill set not drawn before for the same title
OUTPUT = Path(__file__).resolve().parents[1] / "jobrl_async" / "assets" / "job_offer_dataset.json"

# ---------------------------------------------------------------------------------------------
# Authored tables. One title per entry: "Title: skill; skill; ...". An indented line continues
# the entry above it.
# ---------------------------------------------------------------------------------------------

TECH_EN = """
Software Engineer: Python; Java; Git; REST APIs; SQL; Unit testing; Docker; CI/CD; Code review;
    Object-oriented design; Agile/Scrum; Linux
Frontend Developer: JavaScript; TypeScript; React; HTML5; CSS3; Web accessibility (WCAG);
    Responsive design; Webpack; Jest; Figma; REST APIs; Git
Backend Developer: Java; Spring Boot; PostgreSQL; REST APIs; Microservices; Kafka; Redis; Docker;
    Unit testing; SQL; Git
Full Stack Developer: JavaScript; TypeScript; Node.js; React; PostgreSQL; REST APIs; GraphQL;
    Docker; Git; CI/CD; MongoDB
DevOps Engineer: Kubernetes; Docker; Terraform; AWS; CI/CD; Jenkins; GitLab CI; Linux; Bash;
    Prometheus; Ansible; Helm
Site Reliability Engineer: Kubernetes; Prometheus; Grafana; Incident management;
    SLOs and error budgets; Linux; Go; Terraform; On-call operations; Capacity planning; Python
Cloud Architect: AWS; Microsoft Azure; Google Cloud; Terraform; Cloud networking; Cloud security;
    Cost optimization; Kubernetes; Solution architecture; Identity and access management
Data Scientist: Python; pandas; scikit-learn; SQL; Statistics; Machine learning; A/B testing;
    Data visualization; Jupyter; Feature engineering; PyTorch
Data Engineer: Python; SQL; Apache Spark; Airflow; dbt; Kafka; Snowflake; Data modeling;
    ETL pipelines; AWS; Docker
Machine Learning Engineer: Python; PyTorch; TensorFlow; MLOps; Docker; Kubernetes;
    Model deployment; Feature stores; Deep learning; SQL; MLflow
iOS Developer: Swift; SwiftUI; UIKit; Xcode; Core Data; REST APIs; App Store publishing;
    Unit testing; Combine; Git
Android Developer: Kotlin; Java; Jetpack Compose; Android SDK; Gradle; REST APIs; Room; Coroutines;
    Unit testing; Git; Google Play publishing
QA Engineer: Test automation; Selenium; Cypress; Test planning; Manual testing; Jira; API testing;
    Postman; Regression testing; Python; CI/CD
Cybersecurity Analyst: SIEM; Incident response; Threat intelligence; Vulnerability management;
    Splunk; Network security; ISO 27001; Firewalls; Penetration testing; Risk assessment
Product Manager: Product roadmap; User research; Agile/Scrum; Jira; Stakeholder management;
    A/B testing; Data analysis; Prioritization; User stories; SQL; Go-to-market strategy
UX Designer: Figma; User research; Wireframing; Prototyping; Usability testing;
    Information architecture; Design systems; Web accessibility (WCAG); Interaction design;
    Adobe XD
Database Administrator: PostgreSQL; Oracle Database; SQL Server; Backup and recovery;
    Performance tuning; High availability; SQL; Replication; Linux; Bash
Network Engineer: Cisco IOS; TCP/IP; BGP; OSPF; Firewalls; VPN; Network monitoring; Wi-Fi; CCNA;
    Troubleshooting; SD-WAN
IT Support Specialist: Troubleshooting; Windows; macOS; Active Directory; Microsoft 365;
    Ticketing systems; Hardware support; Customer service; Networking basics; ITIL
Systems Administrator: Linux; Windows Server; Active Directory; VMware; Bash; PowerShell;
    Backup and recovery; Ansible; Networking; System monitoring
Solutions Architect: Solution architecture; AWS; Microservices; API design; Stakeholder management;
    Cloud security; Kubernetes; Technical documentation; Integration patterns; Cost estimation
Scrum Master: Scrum; Kanban; Facilitation; Jira; Team coaching; Sprint planning; Retrospectives;
    Conflict resolution; Agile metrics; Stakeholder management
Technical Writer: Technical documentation; Markdown; API documentation; Docs-as-code; Git;
    Information architecture; Editing; DITA; Confluence; User guides
Embedded Software Engineer: C; C++; RTOS; Microcontrollers; Embedded Linux; SPI/I2C/UART;
    Debugging; Oscilloscope; Firmware development; Git
Data Analyst: SQL; Excel; Tableau; Power BI; Python; Data cleaning; Statistics; Dashboarding;
    Reporting; Stakeholder communication
Game Developer: C++; Unity; C#; Unreal Engine; 3D math; Game physics; Performance optimization;
    Git; Shaders; Multiplayer networking
"""
TECH_FR = """
Ingénieur(e) logiciel: Java; Python; Git; Conception orientée objet; Tests unitaires; SQL;
    API REST; Revue de code; Méthodes agiles; Docker; Linux
Développeur(se) full stack: JavaScript; TypeScript; Node.js; React; PostgreSQL; API REST; Docker;
    Git; Tests unitaires; Intégration continue
Développeur(se) front-end: JavaScript; TypeScript; React; Vue.js; HTML5; CSS3;
    Accessibilité numérique (RGAA); Responsive design; Figma; Jest
Développeur(se) back-end: Java; Spring Boot; PostgreSQL; API REST; Microservices; Kafka; Redis;
    Docker; Tests unitaires; Git
Ingénieur(e) DevOps: Kubernetes; Docker; Terraform; AWS; Intégration continue; GitLab CI; Linux;
    Ansible; Supervision; Scripting Bash; Helm
Administrateur(trice) systèmes et réseaux: Linux; Windows Server; Active Directory; VMware;
    Réseaux TCP/IP; Sauvegarde et restauration; PowerShell; Pare-feu; Supervision; Virtualisation
Data scientist: Python; pandas; scikit-learn; SQL; Statistiques; Apprentissage automatique;
    Visualisation de données; Tests A/B; Jupyter; PyTorch
Ingénieur(e) data: Python; SQL; Apache Spark; Airflow; dbt; Kafka; Modélisation de données;
    Pipelines ETL; Snowflake; Google Cloud
Ingénieur(e) en apprentissage automatique: Python; PyTorch; TensorFlow; MLOps;
    Déploiement de modèles; Docker; Apprentissage profond; MLflow;
    Traitement automatique du langage; SQL
Analyste en cybersécurité: SIEM; Réponse aux incidents; Gestion des vulnérabilités; Splunk;
    Sécurité réseau; ISO 27001; Analyse de risques; EBIOS RM; Tests d'intrusion;
    Veille sur les menaces
Chef(fe) de projet informatique: Gestion de projet; Méthodes agiles; Jira; Planification;
    Gestion des risques; Pilotage budgétaire; Rédaction de cahiers des charges; Communication;
    MS Project; Conduite du changement
Product owner: Backlog produit; Scrum; User stories; Jira; Recueil des besoins; Priorisation;
    Recette fonctionnelle; Ateliers utilisateurs; Analyse de données; Communication
Designer UX/UI: Figma; Recherche utilisateur; Maquettage; Prototypage; Tests utilisateurs;
    Design system; Accessibilité numérique (RGAA); Architecture de l'information; Adobe Illustrator
Testeur(se) QA: Automatisation des tests; Selenium; Cypress; Plan de tests;
    Tests de non-régression; Jira; Postman; Tests fonctionnels; Xray; Rédaction de cas de test
Technicien(ne) support informatique: Support utilisateurs; Windows; Microsoft 365;
    Active Directory; Outils de ticketing; Diagnostic matériel; ITIL; Réseaux;
    Déploiement de postes de travail; Sens du service
Architecte cloud: AWS; Microsoft Azure; Google Cloud; Terraform; Architecture de solutions;
    Sécurité du cloud; Kubernetes; FinOps; Réseaux; Gestion des identités et des accès
Administrateur(trice) de bases de données: PostgreSQL; Oracle Database; SQL Server;
    Optimisation des performances; Sauvegarde et restauration; Haute disponibilité; SQL;
    Réplication; Linux; Scripting Bash
Ingénieur(e) réseau: Cisco IOS; TCP/IP; BGP; OSPF; Pare-feu; VPN; Supervision réseau; SD-WAN;
    Wi-Fi; Diagnostic de pannes
Développeur(se) mobile: Kotlin; Swift; Flutter; React Native; Android SDK;
    Publication sur les stores; API REST; Tests unitaires; Git; Firebase
Data analyst: SQL; Excel; Power BI; Tableau; Python; Nettoyage de données; Statistiques;
    Tableaux de bord; Reporting; Communication avec les métiers
Ingénieur(e) systèmes embarqués: C; C++; RTOS; Microcontrôleurs; Linux embarqué;
    Protocoles SPI/I2C/UART; Débogage; Développement de firmware; Oscilloscope; Git
Scrum master: Scrum; Kanban; Animation d'ateliers; Jira; Coaching d'équipe;
    Planification de sprint; Rétrospectives; Gestion des conflits; Indicateurs agiles;
    Amélioration continue
Ingénieur(e) fiabilité (SRE): Kubernetes; Prometheus; Grafana; Gestion des incidents;
    SLO et budgets d'erreur; Linux; Go; Terraform; Astreintes; Planification de capacité
Rédacteur(trice) technique: Documentation technique; Markdown; Documentation d'API; Git;
    Rédaction de guides utilisateurs; Confluence; Relecture; Architecture de l'information; DITA
"""
HEALTHCARE_EN = """
Registered Nurse: Patient assessment; Medication administration; Wound care; IV therapy;
    Electronic health records; Patient education; BLS certification; Care planning;
    Infection control; Vital signs monitoring
ICU Nurse: Critical care nursing; Ventilator management; Hemodynamic monitoring;
    ACLS certification; Medication titration; Arterial line care; Sepsis management;
    Patient assessment; Electronic health records; Family communication
Nurse Practitioner: Diagnosis and treatment; Prescribing; Patient assessment;
    Chronic disease management; Health promotion; Electronic health records;
    Clinical documentation; Preventive care; Care coordination; Pharmacology
General Practitioner: Medical diagnosis; Patient consultation; Chronic disease management;
    Prescribing; Preventive medicine; Clinical documentation; Specialist referrals;
    Electronic health records; Evidence-based medicine; Patient communication
Pharmacist: Medication dispensing; Drug interaction checks; Patient counseling; Pharmacology;
    Inventory management; Prescription verification; Immunization; Regulatory compliance;
    Compounding; Pharmacy software
Physical Therapist: Musculoskeletal assessment; Rehabilitation planning; Manual therapy;
    Therapeutic exercise; Gait training; Patient education; Clinical documentation;
    Post-operative rehabilitation; Pain management; Sports injury treatment
Medical Laboratory Technician: Specimen processing; Hematology; Clinical chemistry; Microbiology;
    Quality control; Laboratory information systems; Phlebotomy; Microscopy; Biosafety;
    Analyzer maintenance
Radiologic Technologist: X-ray imaging; CT scanning; Radiation safety; Patient positioning; PACS;
    Image quality assessment; Contrast administration; Imaging equipment operation; Patient care;
    DICOM
Medical Assistant: Vital signs monitoring; Phlebotomy; Patient intake; Appointment scheduling;
    Electronic health records; Medical terminology; Injections; Infection control;
    Insurance verification; EKG
Healthcare Administrator: Healthcare operations; Budget management; Regulatory compliance;
    Staff management; HIPAA; Quality improvement; Strategic planning; Electronic health records;
    Revenue cycle management; Stakeholder management
Clinical Research Coordinator: Good Clinical Practice (GCP); Informed consent; Patient recruitment;
    Case report forms; Regulatory documentation; IRB submissions; Clinical data management;
    Protocol compliance; Adverse event reporting; EDC systems
Medical Coder: ICD-10-CM; CPT coding; HCPCS; Medical terminology; Anatomy; Claims processing;
    HIPAA; Coding audits; Epic; Medical billing
Dental Hygienist: Dental cleaning; Periodontal assessment; Dental radiography; Patient education;
    Infection control; Fluoride treatment; Dental charting; Local anesthesia; Sealant application;
    Oral cancer screening
Occupational Therapist: Activities of daily living assessment; Rehabilitation planning;
    Adaptive equipment; Cognitive rehabilitation; Fine motor skills; Patient education;
    Clinical documentation; Home safety evaluation; Pediatric therapy; Splinting
Paramedic: Emergency medical care; Advanced life support; Trauma care; Patient assessment;
    Airway management; Medication administration; ACLS certification; Emergency vehicle operations;
    Triage; Incident reporting
Clinical Psychologist: Psychological assessment; Cognitive behavioral therapy; Diagnosis (DSM-5);
    Treatment planning; Crisis intervention; Group therapy; Clinical documentation;
    Psychometric testing; Trauma-informed care; Case management
Sonographer: Ultrasound imaging; Obstetric sonography; Abdominal sonography; Vascular ultrasound;
    Echocardiography; Patient positioning; Image documentation; Anatomy; Doppler imaging;
    Patient care
Health Informatics Specialist: Electronic health records; HL7; FHIR; SQL; Clinical workflows;
    Data analysis; HIPAA; Epic; System implementation; User training
Home Health Aide: Personal care; Mobility assistance; Meal preparation; Medication reminders;
    Vital signs monitoring; Companionship; Light housekeeping; Infection control;
    Care documentation; CPR certification
Surgical Technologist: Sterile technique; Surgical instrumentation; Operating room setup;
    Patient positioning; Instrument counts; Sterilization; Knowledge of surgical procedures;
    Teamwork; Infection control; Aseptic technique
Dietitian: Nutritional assessment; Medical nutrition therapy; Meal planning; Diabetes management;
    Patient counseling; Clinical documentation; Enteral nutrition; Weight management; Food safety;
    Health education
Palliative Care Nurse: Palliative care; Pain management; Symptom management; End-of-life care;
    Family support; Care planning; Medication administration; Patient advocacy;
    Interdisciplinary collaboration; Emotional support
"""
HEALTHCARE_FR = """
Infirmier(ère) diplômé(e) d'État: Soins infirmiers; Administration des médicaments;
    Soins des plaies; Pose de perfusions; Dossier patient informatisé; Éducation thérapeutique;
    Surveillance des constantes; Hygiène hospitalière; Transmissions ciblées;
    Gestes et soins d'urgence (AFGSU)
Infirmier(ère) en soins intensifs: Soins critiques; Ventilation mécanique;
    Surveillance hémodynamique; Gestes et soins d'urgence (AFGSU); Gestion des pousse-seringues;
    Prise en charge du sepsis; Soins des voies veineuses centrales; Dossier patient informatisé;
    Relation avec les familles; Travail en équipe pluridisciplinaire
Infirmier(ère) en soins palliatifs: Soins palliatifs; Prise en charge de la douleur;
    Accompagnement de fin de vie; Soutien aux familles; Soins de confort;
    Administration des médicaments; Écoute active; Travail en équipe pluridisciplinaire;
    Transmissions ciblées; Éthique du soin
Aide-soignant(e): Soins d'hygiène et de confort; Aide à la mobilité; Surveillance des constantes;
    Aide aux repas; Transmissions ciblées; Hygiène hospitalière; Prévention des escarres;
    Écoute active; Travail en équipe; Bientraitance
Médecin généraliste: Diagnostic médical; Consultation; Suivi des maladies chroniques;
    Prescription médicale; Médecine préventive; Dossier médical partagé;
    Orientation vers les spécialistes; Éducation à la santé; Coordination des soins; Écoute
Pharmacien(ne) d'officine: Dispensation des médicaments; Analyse des ordonnances;
    Conseil pharmaceutique; Pharmacologie; Gestion des stocks; Vaccination;
    Préparations magistrales; Logiciel LGPI; Réglementation pharmaceutique; Management d'équipe
Préparateur(trice) en pharmacie: Délivrance des médicaments; Gestion des stocks;
    Préparations magistrales; Conseil au comptoir; Tiers payant; Réception des commandes;
    Logiciel de gestion officinale; Parapharmacie; Pharmacologie; Traçabilité
Masseur(se)-kinésithérapeute: Bilan kinésithérapique; Rééducation fonctionnelle; Thérapie manuelle;
    Renforcement musculaire; Rééducation post-opératoire; Kinésithérapie respiratoire;
    Éducation du patient; Prise en charge de la douleur; Rééducation sportive; Massothérapie
Technicien(ne) de laboratoire médical: Prélèvements sanguins; Hématologie; Biochimie;
    Microbiologie; Contrôle qualité; Système informatique de laboratoire; Norme ISO 15189;
    Microscopie; Maintenance des automates; Biosécurité
Manipulateur(trice) en électroradiologie médicale: Radiologie conventionnelle; Scanner; IRM;
    Radioprotection; Positionnement du patient; PACS; Injection de produit de contraste;
    Contrôle qualité des images; Accueil du patient; DICOM
Sage-femme: Suivi de grossesse; Accouchement; Surveillance du travail; Soins post-nataux;
    Échographie obstétricale; Préparation à la naissance; Accompagnement à l'allaitement;
    Gestes d'urgence obstétricale; Consultation gynécologique; Accompagnement des parents
Secrétaire médical(e): Accueil des patients; Prise de rendez-vous; Terminologie médicale;
    Frappe de comptes rendus; Dossier patient informatisé; Facturation des actes; Confidentialité;
    Doctolib; Gestion des appels; Classement
Cadre de santé: Management d'équipe; Organisation des soins; Gestion des plannings;
    Démarche qualité; Certification HAS; Gestion des risques; Encadrement des stagiaires;
    Conduite de projet; Gestion budgétaire; Communication
Attaché(e) de recherche clinique: Bonnes pratiques cliniques (BPC); Monitoring d'études;
    Consentement éclairé; Cahiers d'observation; Réglementation des essais cliniques;
    Pharmacovigilance; EDC; Rédaction de rapports; Anglais scientifique; Organisation
Ergothérapeute: Bilan d'autonomie; Rééducation fonctionnelle; Aides techniques;
    Aménagement du domicile; Réadaptation cognitive; Motricité fine; Éducation du patient;
    Rédaction de bilans; Pédiatrie; Confection d'orthèses
Psychologue clinicien(ne): Entretien clinique; Bilan psychologique;
    Thérapies cognitivo-comportementales; Tests psychométriques;
    Prise en charge du psychotraumatisme; Thérapie de groupe; Gestion de crise;
    Rédaction de comptes rendus; Travail en équipe pluridisciplinaire; Écoute active
Diététicien(ne): Bilan nutritionnel; Éducation nutritionnelle; Élaboration de menus;
    Prise en charge du diabète; Nutrition entérale; Consultation diététique; Gestion du poids;
    Hygiène alimentaire (HACCP); Rédaction de protocoles; Prise en charge de la dénutrition
Ambulancier(ère): Transport de patients; Gestes et soins d'urgence (AFGSU);
    Conduite en situation d'urgence; Brancardage; Hygiène et désinfection; Premiers secours;
    Surveillance des patients; Relation avec le patient; Gestion du matériel médical;
    Orientation géographique
Auxiliaire de puériculture: Soins aux nouveau-nés; Hygiène et confort de l'enfant;
    Alimentation du nourrisson; Activités d'éveil; Surveillance de l'état de santé;
    Accompagnement des parents; Règles d'hygiène; Observation du développement; Travail en équipe;
    Sécurité de l'enfant
Infirmier(ère) de bloc opératoire: Asepsie; Instrumentation chirurgicale;
    Préparation de la salle d'opération; Stérilisation; Installation du patient; Traçabilité;
    Hygiène hospitalière; Gestes d'urgence; Travail en équipe; Check-list sécurité au bloc
Technicien(ne) d'information médicale: Codage CIM-10; PMSI; Terminologie médicale; Anatomie;
    Contrôle qualité du codage; Tarification à l'activité (T2A); Dossier patient informatisé;
    Excel; Confidentialité; Analyse de données
Orthophoniste: Bilan orthophonique; Rééducation du langage; Troubles de la déglutition;
    Troubles des apprentissages; Rééducation de la voix; Prise en charge de l'aphasie;
    Guidance parentale; Rédaction de bilans; Tests standardisés; Pédiatrie
"""
FINANCE_EN = """
Accountant: General ledger; Financial reporting; Account reconciliation; GAAP; Accounts payable;
    Accounts receivable; Excel; QuickBooks; Month-end close; Tax preparation; Audit support
Financial Analyst: Financial modeling; Excel; Forecasting; Budgeting; Variance analysis; Valuation;
    PowerPoint; SQL; Power BI; Business partnering; DCF analysis
Investment Banking Analyst: Financial modeling; Valuation; DCF analysis; Pitch books;
    M&A transactions; Excel; PowerPoint; Due diligence; Comparable company analysis;
    Capital markets; Bloomberg Terminal
Risk Analyst: Credit risk; Market risk; Risk modeling; Basel III; Stress testing; Python; SQL;
    Value at Risk (VaR); Regulatory reporting; Excel; Statistics
Internal Auditor: Internal audit; Risk assessment; Internal controls; SOX compliance;
    Audit planning; Financial statements; Audit sampling; Audit reporting; IFRS; Data analytics;
    Excel
Tax Accountant: Tax compliance; Corporate tax; VAT; Tax planning; Transfer pricing; Tax returns;
    Tax law research; Excel; Client advisory; IFRS
Financial Controller: Financial reporting; Budgeting; Month-end close; IFRS; Internal controls;
    Cash flow management; SAP; Team leadership; Consolidation; Forecasting
Credit Analyst: Credit analysis; Financial statement analysis; Cash flow analysis; Risk rating;
    Loan underwriting; Excel; Industry research; Covenant monitoring; Credit memos;
    Moody's Analytics
Compliance Officer: AML/KYC; Regulatory compliance; Risk assessment; Policy development;
    Sanctions screening; Compliance monitoring; Compliance training; Regulatory reporting; GDPR;
    Investigations
Portfolio Manager: Portfolio construction; Asset allocation; Equity research; Risk management;
    Bloomberg Terminal; Performance attribution; Fixed income; Client reporting; Python;
    Derivatives
Quantitative Analyst: Python; C++; Stochastic calculus; Derivatives pricing;
    Monte Carlo simulation; Statistics; Time series analysis; Risk modeling; SQL; Machine learning;
    MATLAB
Payroll Specialist: Payroll processing; Payroll tax; ADP; Workday; Excel; Benefits administration;
    Time and attendance; Labor law; Payroll reconciliation; Confidentiality
Bank Teller: Cash handling; Customer service; Account opening; Transaction processing;
    Fraud detection; Cross-selling; Balancing cash drawer; Banking software; Attention to detail;
    Compliance procedures
Financial Advisor: Financial planning; Retirement planning; Investment advice;
    Client relationship management; Estate planning; Insurance products; Risk profiling;
    CFP certification; Portfolio review; Regulatory compliance
Actuary: Actuarial modeling; Statistics; Pricing; Reserving; Life insurance; Solvency II; R;
    Python; Excel; Predictive modeling
Treasury Analyst: Cash management; Liquidity forecasting; Foreign exchange;
    Bank relationship management; Hedging; Treasury management systems; Excel; Payments;
    Debt management; SAP
Accounts Payable Specialist: Invoice processing; Three-way matching; Vendor management;
    Payment runs; Vendor reconciliation; SAP; Excel; Expense reports; 1099 reporting;
    Month-end close
Loan Officer: Loan origination; Credit analysis; Underwriting; Mortgage products;
    Customer relationship management; Regulatory compliance; Sales; Financial documentation review;
    Negotiation; Loan servicing
FP&A Manager: Financial planning and analysis; Budgeting; Forecasting; Variance analysis;
    Financial modeling; Anaplan; Excel; Business partnering; Executive reporting; Team leadership;
    Scenario planning
Insurance Underwriter: Risk assessment; Underwriting; Policy pricing; Commercial insurance;
    Loss analysis; Negotiation; Broker relationships; Excel; Regulatory compliance;
    Actuarial data interpretation
Claims Adjuster: Claims investigation; Damage assessment; Negotiation; Policy interpretation;
    Fraud detection; Customer service; Report writing; Claims management software;
    Claims settlement; Insurance regulations
Fund Accountant: Net asset value (NAV) calculation; Fund accounting; Reconciliation; Investran;
    Financial statements; IFRS; Excel; Capital calls; Investor reporting; Fee calculation
"""
FINANCE_FR = """
Comptable: Tenue de la comptabilité générale; Rapprochements bancaires; Déclarations de TVA;
    Clôtures mensuelles; Comptabilité fournisseurs; Comptabilité clients; Excel; Sage;
    Plan comptable général; Liasse fiscale
Comptable fournisseurs: Saisie des factures; Rapprochement des factures et commandes;
    Relances fournisseurs; Mise en paiement; Lettrage des comptes; SAP; Excel; Notes de frais;
    Clôtures mensuelles; Dématérialisation des factures
Contrôleur(se) de gestion: Contrôle de gestion; Élaboration budgétaire; Reporting;
    Analyse des écarts; Tableaux de bord; Excel; SAP; Power BI; Calcul des coûts de revient;
    Prévisions financières; Business partnering
Analyste financier(ère): Modélisation financière; Analyse financière; Valorisation; Excel;
    Prévisions; PowerPoint; Analyse sectorielle; Normes IFRS; Bloomberg;
    Rédaction de notes d'analyse
Auditeur(trice) financier(ère): Audit légal; Contrôle interne; Évaluation des risques; Normes IFRS;
    Révision des comptes; Échantillonnage; Rédaction de rapports d'audit; Excel;
    Analyse de données; Normes d'exercice professionnel
Auditeur(trice) interne: Audit interne; Cartographie des risques; Contrôle interne; Plan d'audit;
    Formulation de recommandations; Conformité; Analyse de processus; Rédaction de rapports;
    Normes IIA; Excel
Conseiller(ère) clientèle bancaire: Relation client; Ouverture de comptes;
    Crédit à la consommation; Produits d'épargne; Assurance; Prospection commerciale;
    Conformité (KYC); Logiciels bancaires; Conseil patrimonial; Négociation
Chargé(e) de conformité: Lutte contre le blanchiment (LCB-FT); Connaissance client (KYC);
    Réglementation bancaire; Cartographie des risques; Contrôle permanent; Veille réglementaire;
    Formation des équipes; RGPD; Filtrage des sanctions; Reporting réglementaire
Gestionnaire de paie: Paie; Déclaration sociale nominative (DSN); Droit du travail;
    Conventions collectives; Silae; ADP; Excel; Gestion des absences; Charges sociales;
    Confidentialité
Trésorier(ère): Gestion de trésorerie; Prévisions de trésorerie; Relations bancaires;
    Couverture de change; Cash pooling; Kyriba; Financements; Excel; Paiements SEPA; SAP
Analyste risques de crédit: Analyse crédit; Analyse des états financiers; Notation interne;
    Bâle III; Modélisation du risque; SAS; Python; SQL; Rédaction de dossiers de crédit; Excel
Actuaire: Modélisation actuarielle; Provisionnement; Tarification; Solvabilité II; Statistiques; R;
    Python; SAS; Assurance vie; Gestion actif-passif
Expert-comptable: Révision des comptes; Établissement des comptes annuels;
    Fiscalité des entreprises; Conseil aux dirigeants; Liasse fiscale; Droit des sociétés;
    Management d'équipe; Cegid; Consolidation; Gestion sociale et paie
Conseiller(ère) en gestion de patrimoine: Gestion de patrimoine; Fiscalité du patrimoine;
    Assurance-vie; Placements financiers; Transmission de patrimoine; Investissement immobilier;
    Relation client; Analyse des besoins; Réglementation AMF; Prospection
Gérant(e) de portefeuille: Gestion de portefeuille; Allocation d'actifs; Analyse actions;
    Marchés obligataires; Gestion des risques; Bloomberg; Mesure de performance; Produits dérivés;
    Python; Reporting clients
Analyste quantitatif(ve): Python; C++; Calcul stochastique; Pricing de produits dérivés;
    Simulation Monte-Carlo; Statistiques; Séries temporelles; Modélisation du risque; SQL;
    Apprentissage automatique
Responsable administratif(ve) et financier(ère): Pilotage financier; Clôtures annuelles;
    Consolidation; Élaboration budgétaire; Gestion de trésorerie; Fiscalité; Contrôle interne;
    Management d'équipe; Relations avec les commissaires aux comptes; ERP; Droit des sociétés
Chargé(e) d'affaires entreprises: Analyse financière; Montage de crédits; Développement commercial;
    Relation client; Financement de l'exploitation; Flux et moyens de paiement; Négociation;
    Gestion des risques; Réglementation bancaire; Prospection
Souscripteur(trice) en assurance: Souscription; Analyse des risques; Tarification; Assurances IARD;
    Négociation avec les courtiers; Rédaction de contrats; Analyse de sinistralité; Excel;
    Réglementation des assurances; Suivi de portefeuille
Gestionnaire de sinistres: Gestion des sinistres; Expertise des dommages; Analyse des garanties;
    Détection de la fraude; Relation client; Indemnisation; Négociation; Rédaction de courriers;
    Droit des assurances; Logiciel de gestion des sinistres
Chargé(e) de recouvrement: Recouvrement amiable; Relances clients; Négociation d'échéanciers;
    Analyse des encours; Recouvrement contentieux; Lettrage; Excel; SAP;
    Communication téléphonique; Rigueur
Consolideur(se): Consolidation des comptes; Normes IFRS; Retraitements de consolidation;
    Éliminations intragroupe; Reporting groupe; SAP BFC; Excel; Analyse des écarts;
    Clôtures trimestrielles; Anglais
"""
MANUFACTURING_EN = """
Production Supervisor: Production planning; Team leadership; Lean manufacturing; Safety compliance;
    KPI tracking; 5S; Shift management; Root cause analysis; Quality control; ERP systems
Quality Engineer: Quality management systems; ISO 9001; Root cause analysis;
    Statistical process control; FMEA; CAPA; Six Sigma; Supplier audits;
    Measurement system analysis; 8D problem solving
Mechanical Engineer: SolidWorks; AutoCAD; GD&T; Finite element analysis; Mechanical design;
    Prototyping; Bill of materials; Materials selection; Design for manufacturing;
    Tolerance analysis
Manufacturing Engineer: Process optimization; Lean manufacturing; Value stream mapping;
    Work instructions; PFMEA; Fixture design; Automation; Cycle time reduction; AutoCAD;
    Continuous improvement
CNC Machinist: CNC machining; G-code; Blueprint reading; Precision measurement; Lathe operation;
    Milling; Tool setup; Mastercam; Calipers and micrometers; Quality inspection
Maintenance Technician: Preventive maintenance; Electrical troubleshooting; Hydraulics; Pneumatics;
    PLC troubleshooting; Mechanical repair; Welding; CMMS; Lockout/tagout; Blueprint reading
Process Engineer: Process optimization; Statistical process control; Six Sigma;
    Design of experiments; Root cause analysis; Process validation; Minitab; Lean manufacturing;
    PFMEA; Technical documentation
Supply Chain Planner: Demand planning; Material requirements planning (MRP); SAP;
    Inventory management; Production scheduling; Excel; S&OP; Supplier coordination; Forecasting;
    Capacity planning
Welder: MIG welding; TIG welding; Stick welding; Blueprint reading; Metal fabrication;
    Weld inspection; Grinding; Safety procedures; AWS certification; Cutting torch operation
Plant Manager: Plant operations; P&L management; Lean manufacturing; Team leadership;
    Safety management; Budgeting; Continuous improvement; Capital projects; KPI management;
    Labor relations
Automation Engineer: PLC programming; Siemens TIA Portal; Allen-Bradley; SCADA; HMI design;
    Industrial robotics; Electrical schematics; Commissioning; Industrial networks; Python
Quality Control Inspector: Quality inspection; Calipers and micrometers; Blueprint reading; CMM;
    Visual inspection; Nonconformance reporting; ISO 9001; First article inspection;
    Sampling plans; GD&T
Assembly Technician: Mechanical assembly; Reading work instructions; Hand tools; Quality checks;
    Torque tools; Soldering; 5S; Safety procedures; Machine operation; Teamwork
Industrial Engineer: Time and motion studies; Lean manufacturing; Facility layout;
    Capacity planning; Simulation; Ergonomics; Value stream mapping; Cost analysis; AutoCAD; Excel
EHS Manager: Occupational health and safety; Risk assessment; ISO 45001; Incident investigation;
    OSHA regulations; Safety training; Environmental compliance; ISO 14001; Safety audits;
    Emergency planning
Electrical Engineer: Electrical design; AutoCAD Electrical; Motor controls; Power distribution;
    PLC programming; Electrical schematics; NEC; Commissioning; Troubleshooting; EPLAN
Purchasing Buyer: Strategic sourcing; Supplier negotiation; Purchase orders; SAP; Cost reduction;
    Supplier evaluation; Contract management; Excel; Inventory management; Incoterms
"""
MANUFACTURING_FR = """
Chef(fe) d'équipe de production: Management d'équipe; Planification de la production;
    Lean manufacturing; Sécurité au travail; Suivi des indicateurs; 5S;
    Gestion des équipes postées; Résolution de problèmes; Contrôle qualité;
    Animation de points d'équipe
Ingénieur(e) qualité: Système de management de la qualité; ISO 9001; AMDEC;
    Maîtrise statistique des procédés (MSP); Analyse des causes racines; Audits fournisseurs;
    Méthode 8D; Six Sigma; Actions correctives et préventives; IATF 16949
Ingénieur(e) méthodes: Industrialisation; Gammes de fabrication; Lean manufacturing;
    Cartographie des flux (VSM); Chronométrage; Conception d'outillages; AMDEC processus;
    SolidWorks; Amélioration continue; Réduction des temps de cycle
Technicien(ne) de maintenance industrielle: Maintenance préventive; Maintenance corrective;
    Électrotechnique; Hydraulique; Pneumatique; Automatismes; Lecture de schémas; GMAO;
    Habilitation électrique; Soudure
Opérateur(trice) sur commande numérique: Usinage sur machine CN; Programmation ISO;
    Lecture de plans; Réglage machine; Tournage; Fraisage; Contrôle dimensionnel;
    Instruments de mesure; Autocontrôle; Changement d'outils
Soudeur(se): Soudage MIG/MAG; Soudage TIG; Soudage à l'arc; Lecture de plans; Chaudronnerie;
    Meulage; Contrôle des soudures; Règles de sécurité; Oxycoupage; Qualification de soudeur
Automaticien(ne): Programmation d'automates; Siemens TIA Portal; Schneider Electric;
    Supervision SCADA; Interfaces homme-machine (IHM); Robotique industrielle; Schémas électriques;
    Mise en service; Réseaux industriels; Grafcet
Responsable de production: Pilotage de la production; Management d'équipe; Lean manufacturing;
    Gestion budgétaire; Amélioration continue; Sécurité au travail; Planification;
    Indicateurs de performance; Conduite du changement; ERP
Technicien(ne) qualité: Contrôle qualité; Métrologie; Machine à mesurer tridimensionnelle;
    Lecture de plans; Traitement des non-conformités; Autocontrôle; ISO 9001;
    Rédaction de procédures; Audits internes; Cotation fonctionnelle
Dessinateur(trice) projeteur(se): SolidWorks; AutoCAD; CATIA; Cotation fonctionnelle (GPS);
    Conception mécanique; Nomenclatures; Mise en plan; Dimensionnement; Choix des matériaux;
    Conception pour la fabrication
Ingénieur(e) procédés: Optimisation des procédés; Plans d'expériences;
    Maîtrise statistique des procédés (MSP); Six Sigma; Validation des procédés; Minitab;
    Analyse des causes racines; Bilans matière; Rédaction de spécifications; Lean manufacturing
Opérateur(trice) de production: Conduite de ligne; Lecture de fiches d'instructions;
    Contrôle qualité; Autocontrôle; Règles d'hygiène et de sécurité; 5S; Travail en équipe;
    Assemblage; Réglages de premier niveau; Conditionnement
Responsable QHSE: Management QHSE; ISO 45001; ISO 14001; ISO 9001; Document unique (DUERP);
    Analyse des accidents du travail; Audits internes; Formation à la sécurité;
    Réglementation environnementale; Plans de prévention
Planificateur(trice) de production: Ordonnancement; Calcul des besoins (MRP); SAP;
    Gestion des stocks; Planification de la capacité; Excel; Plan industriel et commercial (PIC);
    Coordination avec les achats; Prévisions; Suivi des délais
Acheteur(se) industriel(le): Sourcing; Négociation fournisseurs; Commandes d'achat; SAP;
    Réduction des coûts; Évaluation des fournisseurs; Gestion des contrats; Incoterms;
    Analyse de la valeur; Anglais
Électrotechnicien(ne): Électrotechnique; Câblage d'armoires électriques; Lecture de schémas;
    Habilitation électrique; Variateurs de vitesse; Automates programmables; Mise en service;
    Dépannage; Distribution électrique; EPLAN
Directeur(trice) d'usine: Direction d'usine; Gestion du compte de résultat; Lean manufacturing;
    Management; Sécurité au travail; Gestion budgétaire; Investissements industriels;
    Dialogue social; Amélioration continue; Indicateurs de performance
"""
RETAIL_EN = """
Store Manager: Store operations; Team leadership; Sales targets; Inventory management;
    Visual merchandising; Customer service; Staff scheduling; P&L management; Loss prevention;
    Recruiting
Sales Associate: Customer service; Point of sale systems; Product knowledge; Cash handling;
    Upselling; Merchandising; Shelf replenishment; Communication; Teamwork; Returns processing
Visual Merchandiser: Visual merchandising; Planograms; Window displays; Brand standards;
    Adobe Illustrator; Space planning; Trend awareness; Signage; Store layout; Creativity
Retail Buyer: Assortment planning; Vendor negotiation; Trend analysis; Open-to-buy management;
    Excel; Margin analysis; Sales forecasting; Supplier relations; Category management; Retail math
E-commerce Manager: Shopify; Digital marketing; SEO; Conversion rate optimization;
    Google Analytics; Product catalog management; Email marketing; A/B testing;
    Marketplace management; Customer journey
Cashier: Cash handling; Point of sale systems; Customer service; Payment processing;
    Returns processing; Accuracy; Bagging; Loyalty programs; Communication; Balancing cash drawer
Category Manager: Category management; Assortment planning; Pricing strategy; Supplier negotiation;
    Sales analysis; Promotions planning; Nielsen data; Excel; Space planning; Market research
Inventory Control Specialist: Inventory management; Cycle counting; Stock reconciliation;
    Warehouse management systems; Shrinkage analysis; Excel; Replenishment; Barcode scanning;
    Reporting; Attention to detail
Loss Prevention Officer: Loss prevention; CCTV monitoring; Shoplifting prevention;
    Incident reporting; Security audits; Conflict de-escalation; Inventory audits;
    Internal investigations; Safety procedures; Customer interaction
"""
RETAIL_FR = """
Directeur(trice) de magasin: Gestion de magasin; Management d'équipe; Objectifs commerciaux;
    Gestion des stocks; Merchandising; Relation client; Gestion des plannings;
    Compte d'exploitation; Prévention de la démarque; Recrutement
Vendeur(se) conseil: Conseil client; Techniques de vente; Encaissement; Connaissance des produits;
    Vente additionnelle; Mise en rayon; Merchandising; Fidélisation; Travail en équipe;
    Gestion des retours
Employé(e) libre-service: Mise en rayon; Réassort; Rotation des produits; Étiquetage;
    Accueil client; Gestion des stocks; Contrôle des dates de péremption; Propreté du rayon;
    Réception de marchandises; Transpalette
Hôte(sse) de caisse: Encaissement; Accueil client; Tenue de caisse; Moyens de paiement;
    Gestion des retours; Programmes de fidélité; Rigueur; Comptage de caisse; Amabilité;
    Gestion des files d'attente
Chef(fe) de rayon: Gestion de rayon; Commandes fournisseurs; Merchandising; Management d'équipe;
    Analyse des ventes; Gestion des stocks; Animation commerciale; Prévention de la démarque;
    Implantation des produits; Suivi de la marge
Acheteur(se) textile: Construction de l'offre; Négociation fournisseurs; Analyse des tendances;
    Suivi des ventes; Calcul de marge; Excel; Sourcing; Planification des collections;
    Relations fournisseurs; Gestion de l'open-to-buy
Responsable e-commerce: Shopify; Marketing digital; SEO; Optimisation du taux de conversion;
    Google Analytics; Gestion du catalogue produits; Emailing; Marketplaces; Tests A/B;
    Parcours client
Étalagiste: Merchandising visuel; Vitrines; Planogrammes; Charte de marque; Adobe Illustrator;
    Implantation magasin; Signalétique; Sens esthétique; Veille des tendances; Créativité
"""
EDUCATION_EN = """
Elementary School Teacher: Lesson planning; Classroom management; Differentiated instruction;
    Literacy instruction; Student assessment; Parent communication; Curriculum development;
    Google Classroom; Behavior management; Inclusive education
High School Math Teacher: Algebra; Geometry; Calculus; Lesson planning; Classroom management;
    Student assessment; Differentiated instruction; Graphing calculators; Test preparation;
    Parent communication
Instructional Designer: ADDIE model; Articulate Storyline; E-learning development;
    Curriculum design; Learning management systems; Training needs analysis; Assessment design;
    Storyboarding; Adobe Captivate; SCORM
School Counselor: Academic advising; Career counseling; Crisis intervention;
    College admissions guidance; Social-emotional learning; Student assessment;
    Parent communication; Individual counseling; Confidentiality; Group counseling
University Lecturer: Lecturing; Curriculum development; Academic research; Student supervision;
    Grant writing; Academic publishing; Assessment design; Moodle; Public speaking; Mentoring
Special Education Teacher: Individualized education programs (IEP); Differentiated instruction;
    Behavior management; Assistive technology; Student assessment; Parent collaboration;
    Autism spectrum support; Classroom management; Progress monitoring; Applied behavior analysis
Teaching Assistant: Classroom support; Small-group instruction; Student supervision;
    Behavior management; Lesson preparation; Special needs support; Record keeping; Communication;
    Patience; First aid
ESL Teacher: English as a second language; Lesson planning; Grammar instruction;
    Communicative language teaching; Student assessment; Classroom management; CEFR;
    Cultural awareness; Pronunciation coaching; Online teaching tools
School Principal: School leadership; Staff management; Budget management; Curriculum oversight;
    Teacher evaluation; Student discipline; Community engagement; Strategic planning;
    Education law; Data-driven decision making
"""
EDUCATION_FR = """
Professeur(e) des écoles: Préparation de séquences pédagogiques; Gestion de classe;
    Différenciation pédagogique; Apprentissage de la lecture; Évaluation des élèves;
    Relation avec les parents; Programmes de l'Éducation nationale; Outils numériques éducatifs;
    Inclusion scolaire; Travail en équipe pédagogique
Professeur(e) de mathématiques: Algèbre; Géométrie; Analyse; Préparation de cours;
    Gestion de classe; Évaluation des élèves; Différenciation pédagogique; GeoGebra;
    Préparation aux examens; Python
Ingénieur(e) pédagogique: Ingénierie pédagogique; Articulate Storyline;
    Conception de modules e-learning; Plateformes LMS; Analyse des besoins de formation;
    Scénarisation pédagogique; Moodle; Évaluation des acquis; SCORM; Gestion de projet
Formateur(trice) pour adultes: Animation de formation; Conception de supports pédagogiques;
    Pédagogie active; Évaluation des acquis; Analyse des besoins; Gestion de groupe;
    Classes virtuelles; Qualiopi; Communication; Adaptation au public
Conseiller(ère) principal(e) d'éducation: Vie scolaire; Suivi des élèves; Gestion des conflits;
    Médiation; Relation avec les familles; Encadrement des assistants d'éducation;
    Prévention du décrochage scolaire; Conseils de classe; Pronote; Éducation à la citoyenneté
Enseignant(e) spécialisé(e): Adaptation pédagogique; Projet personnalisé de scolarisation (PPS);
    Troubles des apprentissages; Gestion des comportements; Outils de compensation;
    Évaluation des besoins; Travail avec les familles; Inclusion scolaire;
    Troubles du spectre autistique; Différenciation pédagogique
Accompagnant(e) d'élèves en situation de handicap (AESH): Accompagnement des élèves;
    Aide aux apprentissages; Adaptation des supports; Développement de l'autonomie;
    Communication avec l'enseignant; Patience; Troubles du spectre autistique;
    Aide à la socialisation; Discrétion; Observation
Maître(sse) de conférences: Enseignement supérieur; Recherche académique; Encadrement de thèses;
    Publications scientifiques; Réponse aux appels à projets; Conception de cours;
    Évaluation des étudiants; Moodle; Prise de parole en public; Responsabilités pédagogiques
Professeur(e) de français langue étrangère (FLE): Didactique du FLE;
    Cadre européen commun de référence (CECRL); Préparation au DELF; Enseignement de la grammaire;
    Phonétique; Approche actionnelle; Interculturalité; Évaluation; Outils numériques;
    Animation de classe
"""
ENERGY_EN = """
Power Systems Engineer: Power systems analysis; ETAP; Substation design; Protection relays;
    Load flow studies; Grid interconnection; High voltage equipment; AutoCAD;
    Short circuit analysis; NERC standards
Solar PV Installer: Solar panel installation; Electrical wiring; Roof safety;
    Inverter installation; NEC; Site assessment; Troubleshooting; Hand and power tools;
    Fall protection; Battery storage systems
Wind Turbine Technician: Wind turbine maintenance; Climbing and rescue; Hydraulics;
    Electrical troubleshooting; Gearbox inspection; SCADA; Preventive maintenance;
    GWO certification; Torque and tensioning; Safety procedures
Energy Analyst: Energy modeling; Data analysis; Excel; Python; Energy markets; Regulatory analysis;
    Forecasting; Energy efficiency; Power BI; Report writing
Petroleum Engineer: Reservoir engineering; Drilling operations; Production optimization;
    Well testing; Petrel; Reservoir simulation; Economic evaluation; Completion design;
    HSE compliance; Data analysis
Energy Efficiency Consultant: Energy audits; Building energy modeling; HVAC systems;
    Lighting retrofits; Cost-benefit analysis; ENERGY STAR; ASHRAE standards; Report writing;
    Client advisory; Measurement and verification
Grid Control Room Operator: Grid operations; SCADA; Load balancing; Outage management;
    Switching procedures; Real-time monitoring; Emergency response; NERC standards;
    Energy management systems; Clear radio communication
Renewable Energy Project Manager: Project management; Permitting; Stakeholder management;
    Solar and wind projects; EPC contracts; Budget management; Risk management; Grid connection;
    Scheduling; Environmental impact assessment
Lineworker: Overhead line construction; Underground cable installation; High voltage safety;
    Pole climbing; Bucket truck operation; Transformer installation; Troubleshooting; Rigging;
    Storm restoration; OSHA regulations
"""
ENERGY_FR = """
Ingénieur(e) réseaux électriques: Études de réseaux; Calculs de court-circuit; Postes électriques;
    Plans de protection; Raccordement au réseau; Haute tension; Calculs de répartition de charge;
    AutoCAD; Norme NF C 13-200; PowerFactory
Technicien(ne) de maintenance éolienne: Maintenance d'éoliennes; Travail en hauteur;
    Certification GWO; Hydraulique; Électrotechnique; Diagnostic de pannes; Maintenance préventive;
    SCADA; Serrage au couple; Consignation électrique
Installateur(trice) photovoltaïque: Pose de panneaux photovoltaïques; Câblage électrique;
    Raccordement des onduleurs; Travail en hauteur; Habilitation électrique; Norme NF C 15-100;
    Étude de site; Stockage par batteries; Mise en service; Sécurité sur chantier
Chargé(e) d'affaires en énergies renouvelables: Développement de projets; Études de faisabilité;
    Autorisations administratives; Concertation locale; Suivi des études d'impact;
    Raccordement au réseau; Gestion de projet; Montage financier; Négociation foncière;
    Rédaction de dossiers
Ingénieur(e) efficacité énergétique: Audits énergétiques; Simulation thermique dynamique;
    Réglementation environnementale RE2020; Génie climatique (CVC);
    Certificats d'économies d'énergie; ISO 50001; Calculs de rentabilité; Rédaction de rapports;
    Conseil client; Mesure et vérification
Analyste marchés de l'énergie: Marchés de l'électricité; Marchés du gaz; Modélisation des prix;
    Python; Excel; Analyse de données; Prévisions; Veille réglementaire; Gestion des risques;
    Rédaction de notes
Opérateur(trice) de conduite de centrale: Conduite d'installations; Salle de commande;
    Surveillance des paramètres; Procédures d'exploitation; Consignations; Sûreté nucléaire;
    Radioprotection; Gestion des alarmes; Rondes de surveillance; Travail posté
Monteur(se) réseaux électriques: Construction de lignes aériennes; Pose de câbles souterrains;
    Habilitation électrique; Travail en hauteur; Raccordements; Postes de transformation;
    Dépannage; Conduite d'engins; Lecture de plans; Intervention d'urgence
"""
LOGISTICS_EN = """
Warehouse Associate: Order picking; Packing; Forklift operation; RF scanners; Inventory counting;
    Shipping and receiving; Warehouse safety; Pallet jack operation; Loading and unloading;
    Teamwork
Logistics Coordinator: Shipment scheduling; Freight booking; Carrier coordination;
    Customs documentation; Transportation management systems; Excel; Incoterms; Shipment tracking;
    Customer communication; Problem solving
Supply Chain Analyst: Supply chain analytics; Excel; SQL; Demand forecasting;
    Inventory optimization; Power BI; SAP; KPI reporting; Network modeling; Process improvement
Truck Driver: Commercial driving; CDL Class A; Route planning; Vehicle inspection;
    Hours-of-service compliance; Electronic logging devices; Cargo securement; Defensive driving;
    Delivery documentation; Customer service
Warehouse Manager: Warehouse operations; Team leadership; Warehouse management systems;
    Inventory control; Safety compliance; KPI management; Labor planning; Lean warehousing;
    Budgeting; Continuous improvement
Fleet Manager: Fleet management; Vehicle maintenance scheduling; Telematics; Fuel management;
    Regulatory compliance; Cost control; Driver management; Vendor negotiation; Route optimization;
    Reporting
Customs Broker: Customs clearance; Tariff classification (HS codes); Import/export regulations;
    Customs documentation; Duty calculation; Incoterms; Trade compliance; Customs software;
    Attention to detail; Liaison with customs authorities
Dispatcher: Dispatching; Route optimization; Driver scheduling; Transportation management systems;
    GPS tracking; Load planning; Customer communication; Problem solving; Delivery time windows;
    Excel
Freight Forwarder: Freight forwarding; Ocean freight; Air freight; Rate negotiation; Incoterms;
    Customs documentation; Booking management; Carrier relations; Shipment tracking;
    Quotation preparation
"""
LOGISTICS_FR = """
Préparateur(trice) de commandes: Préparation de commandes; Lecture de bons de commande; Scanner RF;
    Conduite de chariot (CACES); Emballage; Inventaire; Rigueur; Respect des cadences;
    Règles de sécurité; Chargement et déchargement
Cariste: Conduite de chariots élévateurs; CACES R489; Chargement et déchargement;
    Stockage en hauteur; Gestion des stocks; Scanner RF; Sécurité en entrepôt;
    Réception des marchandises; Contrôle des livraisons; Rangement
Responsable d'entrepôt: Gestion d'entrepôt; Management d'équipe; WMS; Gestion des stocks; Sécurité;
    Indicateurs de performance; Planification des ressources; Amélioration continue;
    Gestion budgétaire; Relation client
Agent(e) de transit: Transit international; Fret maritime; Fret aérien; Dédouanement; Incoterms;
    Cotation; Documents d'expédition; Relation avec les transporteurs; Suivi des expéditions;
    Anglais
Déclarant(e) en douane: Dédouanement; Nomenclature douanière; Réglementation douanière;
    Calcul des droits et taxes; Delta G; Incoterms; Origine des marchandises; Statut OEA; Rigueur;
    Relation avec l'administration des douanes
Exploitant(e) transport: Affrètement; Planification des tournées; Gestion des conducteurs; TMS;
    Réglementation du transport routier; Suivi des livraisons; Relation client;
    Optimisation des coûts; Géolocalisation; Gestion des litiges
Conducteur(trice) poids lourd: Permis C; FIMO/FCO; Conduite de poids lourd; Arrimage des charges;
    Chronotachygraphe; Contrôle du véhicule; Livraison; Réglementation sociale européenne;
    Éco-conduite; Relation client
Approvisionneur(se): Approvisionnement; Gestion des stocks; Calcul des besoins (MRP);
    Relances fournisseurs; SAP; Excel; Prévisions de ventes; Suivi des délais;
    Analyse des ruptures; Négociation
Analyste supply chain: Analyse de données; Excel; SQL; Prévisions de la demande;
    Optimisation des stocks; Power BI; SAP; Tableaux de bord; Amélioration des processus;
    Modélisation des flux
"""
HOSPITALITY_EN = """
Hotel Front Desk Agent: Guest check-in and check-out; Reservation systems; Opera PMS;
    Customer service; Payment processing; Complaint resolution; Upselling;
    Multilingual communication; Phone etiquette; Cash handling
Line Cook: Food preparation; Knife skills; Grilling and sautéing; Food safety (ServSafe);
    Mise en place; Recipe execution; Kitchen sanitation; Plating; Stock rotation;
    Teamwork under pressure
Executive Chef: Menu development; Kitchen management; Food cost control; Staff training;
    Food safety; Supplier management; Culinary creativity; Inventory management; HACCP; Budgeting
Restaurant Manager: Restaurant operations; Staff scheduling; Customer service; P&L management;
    Inventory control; Health and safety compliance; Hiring and training; POS systems;
    Conflict resolution; Sales promotion
Housekeeping Supervisor: Housekeeping operations; Room inspections; Staff scheduling;
    Cleaning standards; Supplies inventory; Guest satisfaction; Staff training; Laundry management;
    Quality control; Health and safety
Event Coordinator: Event planning; Vendor coordination; Budget management; Banquet operations;
    Client communication; Timeline management; Contract negotiation; Event setup; Problem solving;
    Catering coordination
Bartender: Cocktail preparation; Mixology; Customer service; Cash handling;
    Responsible alcohol service; Bar inventory; POS systems; Upselling; Speed and accuracy;
    Wine knowledge
Hotel General Manager: Hotel operations; Revenue management; P&L management; Team leadership;
    Guest experience; Budgeting; Sales and marketing; Brand standards; Staff development;
    Property maintenance
Revenue Manager: Revenue management; Pricing strategy; Demand forecasting; Distribution channels;
    IDeaS; Excel; Market analysis; Channel managers; Competitive benchmarking; Reporting
"""
HOSPITALITY_FR = """
Réceptionniste d'hôtel: Accueil des clients; Gestion des réservations; Opera PMS;
    Arrivées et départs; Encaissement; Gestion des réclamations; Anglais; Standard téléphonique;
    Vente additionnelle; Sens du service
Cuisinier(ère): Préparations culinaires; Techniques de découpe; Maîtrise des cuissons;
    Hygiène alimentaire (HACCP); Mise en place; Respect des fiches techniques; Dressage;
    Gestion des stocks; Travail en brigade; Nettoyage du poste
Chef(fe) de cuisine: Élaboration des cartes; Management de brigade; Maîtrise des coûts matière;
    Hygiène alimentaire (HACCP); Gestion des fournisseurs; Créativité culinaire;
    Gestion des stocks; Formation des équipes; Passation des commandes; Gestion budgétaire
Serveur(se): Service en salle; Prise de commande; Conseil client; Service du vin; Encaissement;
    Dressage des tables; Travail en équipe; Anglais; Sens de l'accueil; Rapidité
Gouvernant(e) d'hôtel: Gestion de l'hébergement; Contrôle des chambres; Planning des équipes;
    Normes de propreté; Gestion du linge; Gestion des stocks de produits; Satisfaction client;
    Formation; Contrôle qualité; Hygiène et sécurité
Directeur(trice) de restaurant: Gestion d'exploitation; Management d'équipe; Compte d'exploitation;
    Relation client; Gestion des stocks; Hygiène et sécurité; Recrutement; Logiciel de caisse;
    Animation commerciale; Gestion des plannings
Barman/Barmaid: Préparation de cocktails; Mixologie; Accueil client; Encaissement;
    Gestion des stocks du bar; Service responsable de l'alcool;
    Connaissance des vins et spiritueux; Hygiène; Rapidité; Anglais
Coordinateur(trice) événementiel: Organisation d'événements; Relation prestataires;
    Gestion budgétaire; Coordination logistique; Relation client; Rétroplanning; Négociation;
    Banquets et séminaires; Gestion des imprévus; Communication
Revenue manager: Revenue management; Stratégie tarifaire; Prévisions de la demande;
    Canaux de distribution; Channel manager; Excel; Analyse concurrentielle; Reporting;
    Yield management; Veille du marché
"""
CONSTRUCTION_EN = """
Construction Project Manager: Project management; Construction scheduling; Budget control;
    Primavera P6; Subcontractor management; Contract administration; Site safety; Cost estimation;
    Procore; Risk management
Construction Superintendent: Site supervision; Construction safety; OSHA 30; Crew scheduling;
    Quality control; Blueprint reading; Subcontractor coordination; Daily reporting;
    Material management; Problem solving
Civil Engineer: Structural analysis; AutoCAD Civil 3D; Site development; Stormwater design;
    Geotechnical engineering; Construction documents; Permitting; Road design; Surveying;
    Project management
Cost Estimator: Cost estimation; Quantity takeoff; Bluebeam; Bid preparation; Cost control;
    Contract administration; Value engineering; Excel; Change order management;
    Subcontractor pricing
Electrician: Electrical installation; Wiring; Blueprint reading; NEC; Conduit bending;
    Troubleshooting; Lighting systems; Circuit breakers; Safety procedures; Power tools
Carpenter: Framing; Finish carpentry; Blueprint reading; Measuring and layout; Power tools;
    Formwork; Drywall installation; Door and window installation; Safety procedures; Woodworking
Plumber: Pipe installation; Plumbing codes; Blueprint reading; Pipe fitting; Soldering;
    Drain cleaning; Water heater installation; Troubleshooting; Backflow testing; Customer service
BIM Coordinator: Revit; Navisworks; BIM coordination; Clash detection; AutoCAD;
    BIM execution plans; IFC; 3D modeling; Model auditing; Collaboration
Architect: Architectural design; Revit; AutoCAD; Building codes; SketchUp; Construction documents;
    Client presentations; Sustainable design; Site analysis; Project coordination
"""
CONSTRUCTION_FR = """
Conducteur(trice) de travaux: Gestion de chantier; Planification des travaux; Suivi budgétaire;
    Encadrement des équipes; Coordination des sous-traitants; Sécurité sur chantier;
    Lecture de plans; Réunions de chantier; Métrés; Réception des travaux
Chef(fe) de chantier: Organisation du chantier; Encadrement des compagnons; Lecture de plans;
    Sécurité sur chantier; Contrôle qualité; Approvisionnement en matériaux;
    Implantation d'ouvrages; Comptes rendus de chantier; Respect des délais; Gestes et postures
Ingénieur(e) structure: Calcul de structures; Eurocodes; Béton armé; Robot Structural Analysis;
    AutoCAD; Dimensionnement; Géotechnique; Notes de calcul; Suivi d'exécution;
    Charpente métallique
Économiste de la construction: Métrés; Chiffrage; Estimation des coûts; Rédaction de CCTP;
    Dossiers de consultation des entreprises; Analyse des offres; Suivi financier de chantier;
    Excel; Attik; Marchés publics
Électricien(ne) du bâtiment: Installations électriques; Câblage; Lecture de plans;
    Norme NF C 15-100; Habilitation électrique; Tableaux électriques; Dépannage; Domotique;
    Éclairage; Outillage électroportatif
Plombier(ère) chauffagiste: Installation sanitaire; Pose de chaudières; Soudure; Brasage;
    Lecture de plans; Dépannage; Pompes à chaleur; Réglementation gaz; Entretien des équipements;
    Relation client
Coordinateur(trice) BIM: Revit; Navisworks; Coordination BIM; Détection de conflits;
    Convention BIM; IFC; Maquette numérique; AutoCAD; Audit de maquettes; Travail collaboratif
Architecte: Conception architecturale; Revit; AutoCAD; Réglementation de la construction;
    Permis de construire; SketchUp; Dossiers de consultation; Suivi de chantier;
    Architecture bioclimatique; Présentation client
Maçon(ne): Maçonnerie; Coffrage; Coulage du béton; Lecture de plans; Montage de murs en parpaings;
    Ferraillage; Enduits; Montage d'échafaudages; Respect des règles de sécurité; Travail en équipe
"""
MARKETING_EN = """
Digital Marketing Manager: Digital marketing strategy; SEO; SEM; Google Ads;
    Social media marketing; Google Analytics; Email marketing; Marketing automation;
    Budget management; Content strategy
Content Writer: Copywriting; SEO writing; Content strategy; Editing; Research; WordPress;
    Storytelling; Social media content; Brand voice; Proofreading
Social Media Manager: Social media strategy; Content creation; Community management;
    Meta Business Suite; Hootsuite; Influencer marketing; Social analytics;
    Paid social advertising; Canva; Copywriting
Graphic Designer: Adobe Photoshop; Adobe Illustrator; Adobe InDesign; Typography; Branding;
    Layout design; Print production; Figma; Color theory; Visual communication
SEO Specialist: Keyword research; On-page SEO; Technical SEO; Link building; Google Search Console;
    Google Analytics; Semrush; Content optimization; HTML; Reporting
Journalist: News writing; Interviewing; Investigative research; Fact-checking; Editing; AP style;
    Social media; Deadline management; Multimedia storytelling; Source development
Video Editor: Adobe Premiere Pro; Final Cut Pro; DaVinci Resolve; Color grading; Motion graphics;
    After Effects; Audio editing; Storytelling; Video compression; Media asset management
Brand Manager: Brand strategy; Market research; Campaign management; Budget management;
    Consumer insights; Product launches; Agency management; Marketing analytics; Brand positioning;
    Cross-functional collaboration
Public Relations Specialist: Media relations; Press releases; Crisis communication;
    Event management; Storytelling; Social media; Media monitoring; Stakeholder communication;
    Copywriting; Reputation management
"""
MARKETING_FR = """
Chargé(e) de marketing digital: Stratégie digitale; SEO; SEA; Google Ads; Réseaux sociaux;
    Google Analytics; Emailing; Marketing automation; Création de contenus; Reporting
Community manager: Animation de communautés; Création de contenus; Réseaux sociaux; Modération;
    Veille; Canva; Planification éditoriale; Analyse des performances;
    Publicité sur les réseaux sociaux; Rédaction web
Rédacteur(trice) web: Rédaction web; Référencement naturel (SEO); WordPress; Stratégie de contenu;
    Relecture; Recherche documentaire; Storytelling; Orthographe irréprochable; Réseaux sociaux;
    Ligne éditoriale
Graphiste: Adobe Photoshop; Adobe Illustrator; Adobe InDesign; Typographie; Identité visuelle;
    Mise en page; Chaîne graphique; Figma; Théorie des couleurs; Communication visuelle
Journaliste: Rédaction d'articles; Interviews; Enquête; Vérification des faits;
    Secrétariat de rédaction; Réseaux sociaux; Respect des délais; Reportage multimédia;
    Déontologie journalistique; Carnet d'adresses
Chef(fe) de produit marketing: Marketing produit; Études de marché; Lancement de produits;
    Plan marketing; Positionnement; Analyse concurrentielle; Gestion budgétaire;
    Coordination des agences; Veille; Tableaux de bord
Chargé(e) de relations presse: Relations presse; Communiqués de presse; Dossiers de presse;
    Communication de crise; Fichiers médias; Revue de presse; Organisation d'événements; Rédaction;
    Réseaux sociaux; E-réputation
Monteur(se) vidéo: Adobe Premiere Pro; Final Cut Pro; DaVinci Resolve; Étalonnage; Motion design;
    After Effects; Montage son; Narration visuelle; Sous-titrage; Gestion des rushs
Responsable communication: Stratégie de communication; Communication interne;
    Communication externe; Relations presse; Gestion de projet; Rédaction; Gestion budgétaire;
    Événementiel; Réseaux sociaux; Management d'équipe
"""
PUBLIC_SECTOR_EN = """
Policy Analyst: Policy research; Legislative analysis; Data analysis; Report writing;
    Stakeholder consultation; Cost-benefit analysis; Stata; Public speaking; Briefing notes;
    Program evaluation
Urban Planner: Land use planning; Zoning regulations; GIS; ArcGIS; Community engagement;
    Comprehensive planning; Environmental review; Transportation planning; Report writing;
    Public presentations
Social Worker: Case management; Needs assessment; Crisis intervention; Child welfare;
    Community resources; Counseling; Case documentation; Advocacy; Family support;
    Trauma-informed care
Grants Administrator: Grant writing; Grant administration; Budget tracking; Compliance reporting;
    Federal regulations; Proposal development; Stakeholder communication; Excel;
    Program evaluation; Record keeping
Police Officer: Law enforcement; Patrol; Report writing; De-escalation; Emergency response;
    Criminal law; First aid; Community policing; Evidence collection; Firearms proficiency
Firefighter: Fire suppression; Emergency medical response; Search and rescue;
    Hazardous materials response; Fire prevention; Physical fitness; Equipment maintenance;
    EMT certification; Teamwork; Incident command system
Public Procurement Officer: Public procurement; Tender evaluation; Contract management;
    Procurement regulations; Supplier evaluation; Bid documentation; Negotiation; ERP systems;
    Compliance; Market research
Administrative Officer: Office administration; Records management; Microsoft Office;
    Correspondence; Scheduling; Budget tracking; Customer service; Data entry; Policy compliance;
    Report preparation
Government Program Manager: Program management; Performance measurement; Budget management;
    Stakeholder engagement; Policy implementation; Risk management; Reporting; Contract oversight;
    Team leadership; Strategic planning
"""
PUBLIC_SECTOR_FR = """
Chargé(e) de mission politiques publiques: Analyse des politiques publiques; Rédaction de notes;
    Conduite de projet; Concertation; Veille juridique; Évaluation de dispositifs;
    Animation de réseaux partenaires; Analyse de données;
    Connaissance des collectivités territoriales; Prise de parole en public
Urbaniste: Planification urbaine; Plan local d'urbanisme (PLU); SIG; QGIS; Concertation publique;
    Droit de l'urbanisme; Études d'impact; Mobilités; Rédaction de rapports; Projets d'aménagement
Assistant(e) de service social: Accompagnement social; Évaluation des situations;
    Protection de l'enfance; Accès aux droits; Entretiens d'aide; Travail en réseau;
    Rédaction de rapports sociaux; Médiation familiale; Insertion; Droit social
Gestionnaire des marchés publics: Code de la commande publique; Rédaction de cahiers des charges;
    Analyse des offres; Procédures de mise en concurrence; Exécution des marchés;
    Plateformes de dématérialisation; Négociation; Contrôle de légalité; Sourcing; Rigueur
Agent(e) administratif(ve): Accueil du public; Gestion du courrier;
    Traitement de dossiers administratifs; Suite Office; Classement et archivage;
    Saisie de données; Rédaction de courriers; Procédures administratives; Gestion des agendas;
    Discrétion
Sapeur-pompier professionnel: Lutte contre l'incendie; Secours à personne;
    Sauvetage et déblaiement; Risques chimiques; Prévention incendie; Condition physique;
    Maintenance du matériel; Premiers secours; Travail en équipe; Conduite d'engins
Policier(ère) municipal(e): Police de proximité; Surveillance de la voie publique;
    Rédaction de procès-verbaux; Réglementation routière; Médiation; Gestion des conflits;
    Premiers secours; Pouvoirs de police du maire; Interventions d'urgence;
    Relation avec la population
Chargé(e) de subventions européennes: Fonds européens FEDER et FSE+; Montage de dossiers;
    Suivi financier; Contrôle de conformité; Rédaction de rapports; Gestion de projet;
    Animation de partenariats; Excel; Réglementation des aides d'État; Évaluation
Secrétaire de mairie: État civil; Urbanisme; Budget communal; Comptabilité publique (M57);
    Organisation des élections; Préparation du conseil municipal; Accueil du public;
    Rédaction d'actes administratifs; Gestion du personnel communal; Marchés publics
"""
LEGAL_EN = """
Corporate Lawyer: Mergers and acquisitions; Contract drafting; Corporate governance; Due diligence;
    Securities law; Negotiation; Legal research; Joint ventures; Regulatory compliance;
    Client advisory
Paralegal: Legal research; Document drafting; Case management; E-discovery;
    Court filing procedures; Westlaw; Client communication; Deposition preparation; Legal citation;
    Calendaring
In-house Counsel: Contract negotiation; Commercial contracts; Regulatory compliance;
    Legal risk assessment; Employment law; Data privacy (GDPR); Intellectual property;
    Litigation management; Corporate governance; Business partnering
Litigation Attorney: Litigation; Legal research; Motion drafting; Depositions; Trial preparation;
    Case strategy; Discovery; Negotiation; Oral advocacy; Westlaw
Contract Manager: Contract drafting; Contract negotiation; Contract lifecycle management;
    Risk management; Vendor management; Compliance; Redlining; Legal review;
    Stakeholder communication; DocuSign
Legal Assistant: Legal document preparation; Calendaring; Client intake; Court filing;
    Dictation transcription; Microsoft Word; Time billing; Case file management; Confidentiality;
    Legal terminology
Intellectual Property Attorney: Patent prosecution; Trademark registration; IP litigation;
    Licensing agreements; Prior art searches; Patent drafting; Freedom-to-operate analysis;
    IP portfolio management; Technical writing; Client counseling
Privacy Counsel: GDPR; CCPA; Privacy impact assessments; Data protection policies;
    Records of processing activities; Data breach response; Privacy training; Vendor assessments;
    Regulatory liaison; Risk assessment
Employment Lawyer: Employment law; Workplace investigations; Discrimination claims;
    Employment contracts; Wage and hour compliance; Negotiation; Litigation; HR advisory;
    Policy drafting; Mediation
"""
LEGAL_FR = """
Avocat(e) en droit des affaires: Droit des sociétés; Fusions-acquisitions; Rédaction de contrats;
    Audit juridique; Négociation; Gouvernance d'entreprise; Droit commercial; Recherche juridique;
    Conseil aux entreprises; Anglais juridique
Juriste d'entreprise: Droit des contrats; Négociation contractuelle; Conformité réglementaire;
    Droit social; RGPD; Propriété intellectuelle; Gestion des contentieux; Droit des sociétés;
    Veille juridique; Conseil aux opérationnels
Assistant(e) juridique: Rédaction d'actes; Secrétariat juridique; Gestion des dossiers;
    Recherche juridique; Formalités juridiques; Tenue des registres; Suivi des échéances; Word;
    Confidentialité; Terminologie juridique
Clerc de notaire: Rédaction d'actes notariés; Droit immobilier; Droit de la famille; Successions;
    Formalités hypothécaires; Relation client; Genapi; Fiscalité immobilière;
    Recherches cadastrales; Rigueur
Juriste en droit social: Droit du travail; Contrats de travail;
    Relations avec les représentants du personnel; Contentieux prud'homal;
    Rupture du contrat de travail; Veille juridique; Conseil RH; Rédaction de notes;
    Négociation collective; Audits sociaux
Délégué(e) à la protection des données (DPO): RGPD; Registre des traitements;
    Analyses d'impact (AIPD); Politique de protection des données; Sensibilisation des équipes;
    Gestion des violations de données; Relation avec la CNIL; Audit de conformité;
    Contrats de sous-traitance; Sécurité de l'information
Avocat(e) pénaliste: Droit pénal; Procédure pénale; Plaidoirie; Assistance en garde à vue;
    Rédaction de conclusions; Recherche jurisprudentielle; Relation client; Audiences;
    Gestion du stress; Négociation
Conseil en propriété industrielle: Dépôt de brevets; Rédaction de brevets; Droit des marques;
    Recherches d'antériorité; Contentieux en contrefaçon; Contrats de licence;
    Analyse de liberté d'exploitation; Gestion de portefeuilles de titres; Anglais technique;
    Conseil client
Juriste contrats: Rédaction de contrats; Négociation contractuelle;
    Gestion du cycle de vie des contrats; Analyse des risques; Suivi des engagements;
    Gestion des avenants; Droit des contrats; Conformité; Anglais juridique; Communication
"""
AGRICULTURE_EN = """
Farm Manager: Farm operations; Crop management; Livestock management; Budgeting;
    Equipment maintenance; Staff supervision; Agricultural regulations; Soil management;
    Record keeping; Farm product marketing
Agronomist: Soil science; Crop nutrition; Pest management; Precision agriculture; Field trials;
    Irrigation management; Crop protection; Data analysis; Farmer advisory; GIS
Tractor Operator: Tractor operation; Harvesting equipment; Planting; Crop spraying;
    Equipment maintenance; GPS guidance systems; Safety procedures; Tillage; Hauling; Hydraulics
Herd Manager: Animal husbandry; Herd health; Feeding programs; Breeding; Milking operations;
    Record keeping; Animal welfare; Biosecurity; Equipment maintenance; Veterinary coordination
Agricultural Engineer: Irrigation systems; Farm machinery design; Soil and water conservation;
    AutoCAD; Precision agriculture; Drainage design; Post-harvest technology;
    Environmental compliance; Project management; Data analysis
Greenhouse Grower: Plant propagation; Greenhouse climate control; Integrated pest management;
    Irrigation and fertigation; Crop scheduling; Plant nutrition; Pruning; Record keeping;
    Harvesting; Quality control
Agricultural Sales Representative: Agricultural products; Customer relationship management; Sales;
    Crop protection products; Territory management; Agronomy knowledge; Negotiation; CRM;
    Product demonstrations; Market analysis
Viticulturist: Vineyard management; Vine pruning; Canopy management; Pest and disease control;
    Soil management; Harvest planning; Irrigation; Grape quality assessment; Organic farming;
    Equipment supervision
Farmhand: Planting; Harvesting; Animal feeding; Equipment operation; Irrigation; Fence repair;
    Weeding; Physical stamina; Safety procedures; Teamwork
"""
AGRICULTURE_FR = """
Chef(fe) d'exploitation agricole: Gestion d'exploitation; Conduite des cultures; Élevage;
    Gestion budgétaire; Entretien du matériel; Encadrement des salariés;
    Réglementation agricole (PAC); Gestion des sols; Commercialisation; Traçabilité
Ingénieur(e) agronome: Agronomie; Fertilisation; Protection des cultures; Agriculture de précision;
    Expérimentations au champ; Irrigation; Conseil aux agriculteurs; Analyse de données; SIG;
    Certiphyto
Conducteur(trice) d'engins agricoles: Conduite de tracteur; Conduite de moissonneuse-batteuse;
    Semis; Pulvérisation; Entretien du matériel; Guidage GPS; Travail du sol; Règles de sécurité;
    Attelage; Récolte
Technicien(ne) d'élevage: Conduite d'élevage; Santé du troupeau; Alimentation animale;
    Reproduction; Traite; Suivi technico-économique; Bien-être animal; Biosécurité;
    Enregistrement des données; Conseil aux éleveurs
Ouvrier(ère) viticole: Taille de la vigne; Palissage; Vendanges; Travaux en vert;
    Entretien des sols; Traitements phytosanitaires; Conduite de tracteur enjambeur; Certiphyto;
    Travail en extérieur; Rigueur
Maraîcher(ère): Cultures maraîchères; Semis et plantations; Irrigation; Agriculture biologique;
    Récolte; Protection des cultures; Vente directe; Gestion de serres; Rotation des cultures;
    Conditionnement
Technico-commercial(e) en agrofourniture: Vente de produits agricoles; Relation client; Agronomie;
    Prospection; Négociation; Gestion de portefeuille clients; Produits phytosanitaires; Semences;
    Conseil technique; CRM
Œnologue: Vinification; Analyses œnologiques; Assemblage; Dégustation; Élevage des vins;
    Hygiène en cave; Traçabilité; Réglementation vitivinicole; Suivi de maturité; Contrôle qualité
Ouvrier(ère) agricole: Travaux des champs; Récolte; Soins aux animaux; Conduite de tracteur;
    Irrigation; Entretien des clôtures; Désherbage; Endurance physique; Règles de sécurité;
    Travail en équipe
"""

# Canonical English industry label -> (English table, French table). The order is the output's
# draw order, so changing it changes the file (the --check test will say so).
INDUSTRIES: dict[str, tuple[str, str]] = {
    "Tech": (TECH_EN, TECH_FR),
    "Healthcare": (HEALTHCARE_EN, HEALTHCARE_FR),
    "Finance": (FINANCE_EN, FINANCE_FR),
    "Manufacturing": (MANUFACTURING_EN, MANUFACTURING_FR),
    "Retail": (RETAIL_EN, RETAIL_FR),
    "Education": (EDUCATION_EN, EDUCATION_FR),
    "Energy": (ENERGY_EN, ENERGY_FR),
    "Logistics": (LOGISTICS_EN, LOGISTICS_FR),
    "Hospitality": (HOSPITALITY_EN, HOSPITALITY_FR),
    "Construction": (CONSTRUCTION_EN, CONSTRUCTION_FR),
    "Marketing & Media": (MARKETING_EN, MARKETING_FR),
    "Public Sector": (PUBLIC_SECTOR_EN, PUBLIC_SECTOR_FR),
    "Legal": (LEGAL_EN, LEGAL_FR),
    "Agriculture": (AGRICULTURE_EN, AGRICULTURE_FR),
}

Pools = dict[str, tuple[str, ...]]  # job title -> its skill pool
RecordKey = tuple[str, str, tuple[str, ...]]


def normalise(text: str) -> str:
    """Case-, accent- and space-blind form, for duplicate checks: "Été" == "ete"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def parse_pools(table: str, where: str) -> Pools:
    """Read one authored table; `where` names it in errors ("Tech/fr")."""
    entries: list[str] = []
    for line in textwrap.dedent(table).splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            if not entries:
                raise ValueError(f"{where}: continuation line before any title: {line.strip()!r}")
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    pools: Pools = {}
    for entry in entries:
        head, sep, rest = entry.partition(":")
        title = head.strip()
        if not sep or not title:
            raise ValueError(f"{where}: entry without 'Title:' prefix: {entry[:60]!r}")
        skills = tuple(s.strip() for s in rest.split(";") if s.strip())
        check_pool(title, skills, f"{where}/{title}")
        if title in pools:
            raise ValueError(f"{where}: title {title!r} authored twice")
        pools[title] = skills
    return pools


def check_pool(title: str, skills: Sequence[str], where: str) -> None:
    if len(skills) not in POOL_SIZE:
        want = f"{POOL_SIZE.start}-{POOL_SIZE.stop - 1}"
        raise ValueError(f"{where}: {len(skills)} skills, want {want}")
    keys = [normalise(s) for s in skills]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"{where}: skill listed twice: {repeated}")
    if normalise(title) in keys:
        raise ValueError(f"{where}: the title is listed as its own skill")


def load_tables() -> dict[str, dict[str, Pools]]:
    """industry -> language -> pools; a (language, title) belongs to one industry only."""
    tables: dict[str, dict[str, Pools]] = {}
    owner: dict[tuple[str, str], str] = {}
    for industry, (english, french) in INDUSTRIES.items():
        tables[industry] = {
            "en": parse_pools(english, f"{industry}/en"),
            "fr": parse_pools(french, f"{industry}/fr"),
        }
        for language, pools in tables[industry].items():
            for title in pools:
                key = (language, normalise(title))
                if key in owner:
                    raise ValueError(f"{industry}/{language}: {title!r} is also under {owner[key]}")
                owner[key] = industry
    return tables


def allocate(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `shares` (largest remainder, ties to the earlier key)."""
    weight = sum(shares.values())
    exact = {name: total * share / weight for name, share in shares.items()}
    counts = {name: int(value) for name, value in exact.items()}
    names = list(shares)
    order = sorted(names, key=lambda name: (counts[name] - exact[name], names.index(name)))
    for name in order[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def industry_shares(industries: Sequence[str]) -> dict[str, float]:
    """The seed's four named shares; the rest split evenly over the other industries."""
    others = [name for name in industries if name not in MAIN_INDUSTRY_SHARES]
    rest = (1.0 - sum(MAIN_INDUSTRY_SHARES.values())) / len(others)
    return {name: MAIN_INDUSTRY_SHARES.get(name, rest) for name in industries}


def record_key(language: str, title: str, skills: Sequence[str]) -> RecordKey:
    """What makes two records the same: language, title and skill set, all normalised."""
    return (language, normalise(title), tuple(sorted(normalise(s) for s in skills)))


def draw_group(
    rng: random.Random,
    industry: str,
    language: str,
    pools: Pools,
    sizes: Sequence[int],
    seen: set[RecordKey],
) -> list[dict]:
    """One record per size, for one industry and language: titles in turn, so repeats stay even."""
    titles = list(pools)
    rng.shuffle(titles)
    records = []
    for i, size in enumerate(sizes):
        title = titles[i % len(titles)]
        for _ in range(MAX_DRAWS_PER_RECORD):
            skills = rng.sample(pools[title], size)
            key = record_key(language, title, skills)
            if key not in seen:
                break
        else:
            raise ValueError(f"{industry}/{language}/{title}: no unused {size}-skill set left")
        seen.add(key)
        context = {"job_title": title, "language": language, "skills": skills, "industry": industry}
        records.append({"context": context})
    return records


def build_records(seed: int = SEED, total: int = TOTAL_RECORDS) -> list[dict]:
    """The whole dataset, in its (shuffled, seeded) file order."""
    tables = load_tables()
    rng = random.Random(seed)
    # Skill counts are dealt from one shuffled deck so 3, 4 and 5 stay even over the whole file.
    sizes = [SKILLS_PER_RECORD[i % len(SKILLS_PER_RECORD)] for i in range(total)]
    rng.shuffle(sizes)
    deck = iter(sizes)
    seen: set[RecordKey] = set()
    records: list[dict] = []
    for industry, count in allocate(total, industry_shares(list(tables))).items():
        for language, n in allocate(count, LANGUAGE_SHARES).items():
            hand = [next(deck) for _ in range(n)]
            records += draw_group(rng, industry, language, tables[industry][language], hand, seen)
    rng.shuffle(records)  # industries and languages interleaved, whatever split a reader takes
    return records


def render(records: Sequence[Mapping]) -> str:
    """A JSON array, one record per line: valid JSON that still diffs line by line."""
    lines = (json.dumps(record, ensure_ascii=False) for record in records)
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    text = render(build_records())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output}: stale; run scripts/build_dataset.py", file=sys.stderr)
            return 1
        print(f"{args.output}: up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: {text.count(chr(10)) - 2} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
